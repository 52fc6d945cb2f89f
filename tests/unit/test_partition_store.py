"""The partition store contract, one suite over every implementation (RocksDB and in memory).

Values are opaque to the store: the suite stores (expiry time, count) pairs through its own codec.
"""

from collections.abc import Callable

import pytest

from pair_codec import CODEC
from streams.rocks_state import RocksPartitionStore
from streams.state import POSITION_KEY, MemoryPartitionStore, PartitionStore, decode_position


@pytest.fixture(params=["rocksdb", "memory"])
def open_store(request, tmp_path) -> Callable[[], PartitionStore]:
    """Opens partition 3's store; opening it again after close() plays a restart on the same disk."""
    disk: dict[bytes, bytes] = {}
    opened: list[PartitionStore] = []

    def open_() -> PartitionStore:
        if request.param == "rocksdb":
            store = RocksPartitionStore(tmp_path, 3, CODEC)
        else:
            store = MemoryPartitionStore(3, CODEC, disk)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def test_a_new_store_is_empty_and_has_no_position(open_store):
    store = open_store()
    assert (store.partition, store.position, store.changelog_next, len(store)) == (3, None, 0, 0)
    assert store.get("alice") is None
    assert store.take_changes(0).changes == {}


def test_changes_are_taken_once_encoded_and_deletions_are_none(open_store):
    store = open_store()
    get, set_ = store.get, store.set  # as the hot loop keeps them
    set_("alice", (100.0, 1))
    set_("bob", (100.0, 1))
    set_("alice", (100.0, 2))
    store.delete("bob")
    assert get("alice") == (100.0, 2) and get("bob") is None
    flush = store.take_changes(17)
    assert (flush.partition, flush.position) == (3, 17)
    assert flush.changes == {b"alice": CODEC.encode((100.0, 2)), b"bob": None}
    assert store.take_changes(18).changes == {}
    set_("carol", (100.0, 1))
    assert store.take_changes(19).changes == {b"carol": CODEC.encode((100.0, 1))}


def test_changelog_records_end_with_the_position_marker(open_store):
    store = open_store()
    store.set("alice", (100.0, 1))
    records = list(store.take_changes(42).changelog_records())
    assert records[:-1] == [(b"alice", CODEC.encode((100.0, 1)))]
    assert records[-1][0] == POSITION_KEY and decode_position(records[-1][1]) == 42


def _restarted(store, open_store) -> tuple[dict, int | None, int]:
    """Close ``store`` and open it again: (its values, position, changelog_next) as a restart finds them."""
    store.close()
    again = open_store()
    return again.snapshot(), again.position, again.changelog_next


def test_persisted_changes_and_positions_survive_a_restart_and_unpersisted_ones_do_not(open_store):
    store = open_store()
    store.set("alice", (100.0, 1))
    store.set("bob", (100.0, 5))
    store.persist(store.take_changes(10), changelog_next=4)
    assert (store.position, store.changelog_next) == (10, 4)
    store.set("alice", (100.0, 2))
    store.delete("bob")
    store.persist(store.take_changes(12), changelog_next=7)
    store.set("carol", (100.0, 1))  # counted, never flushed
    assert _restarted(store, open_store) == ({"alice": (100.0, 2)}, 12, 7)


def test_a_flush_taken_but_not_persisted_leaves_the_local_copy_at_the_previous_flush(open_store):
    store = open_store()
    store.set("alice", (100.0, 1))
    store.persist(store.take_changes(5), changelog_next=2)
    store.set("alice", (100.0, 2))
    store.take_changes(6)  # handed off; the process dies before it is delivered
    assert _restarted(store, open_store) == ({"alice": (100.0, 1)}, 5, 2)


def test_apply_changelog_sets_and_deletes_in_memory_and_on_disk(open_store):
    store = open_store()
    store.apply_changelog({b"alice": CODEC.encode((100.0, 3)), b"bob": CODEC.encode((100.0, 1))}, 8, 3)
    store.apply_changelog({b"bob": None}, 9, 5)
    assert store.snapshot() == {"alice": (100.0, 3)}
    assert store.take_changes(9).changes == {}  # restored values are not changes to flush again
    assert _restarted(store, open_store) == ({"alice": (100.0, 3)}, 9, 5)


def test_expire_drops_what_the_codec_calls_expired_at_the_watermark_and_tombstones_it(open_store):
    store = open_store()
    store.set("old", (50.0, 1))
    store.set("young", (150.0, 1))
    store.persist(store.take_changes(1), changelog_next=1)
    store.watermark = 100.0
    assert store.expire() == 1
    assert store.snapshot() == {"young": (150.0, 1)}
    assert store.take_changes(2).changes == {b"old": None}


def test_wipe_forgets_memory_changes_positions_and_the_disk(open_store):
    store = open_store()
    store.set("alice", (100.0, 1))
    store.persist(store.take_changes(5), changelog_next=3)
    store.set("bob", (100.0, 1))
    store.wipe()
    assert (store.position, store.changelog_next, len(store)) == (None, 0, 0)
    assert store.take_changes(0).changes == {}
    store.set("carol", (100.0, 1))  # the hot-path methods still work on the wiped store
    assert store.get("carol") == (100.0, 1)
    assert _restarted(store, open_store) == ({}, None, 0)
