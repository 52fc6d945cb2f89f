"""The request history on disk is bounded by event time: churning users who never reach
``history_max_count`` new entries (so are never trimmed one by one) are swept once event time has moved
a quarter of ``history_max_age`` on, and the RocksDB directory stops growing with the requests."""

from pathlib import Path

import msgspec

from streams.history import Decided, HistoryStore

T0 = 1_732_900_000.0
RATE, PHASE, ACTIVE = 1_000.0, 50_000, 2_000  # as bench/soak.py: a fresh 2,000 users every 50,000 events


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def live_entries(store: HistoryStore) -> int:
    """The entries on disk, counted inside the runs (one value per user and apply)."""
    it, n = store._db.iter(), 0
    it.seek_to_first()
    while it.valid():
        if not it.key().startswith(b"\x00"):  # not a meta key
            n += len(msgspec.msgpack.decode(it.value()))
        it.next()
    return n


def run(store: HistoryStore, events: int, sweep: bool) -> tuple[list[int], list[int]]:
    """Apply ``events`` decisions in batches of 1,000 (sweeping when due); per 100,000: (entries on disk,
    directory bytes)."""
    entries, sizes = [], []
    for chunk in range(0, events, 1_000):
        batch = [
            Decided(f"s{i}", f"u{(i // PHASE) * ACTIVE + i % ACTIVE}", "198.51.100.7", "read", "allow", "within_limit",
                    T0 + i / RATE)
            for i in range(chunk, chunk + 1_000)
        ]
        store.apply(batch, chunk + 1_000)
        if sweep and store.sweep_due():
            store.sweep()
        if (chunk + 1_000) % 100_000 == 0:
            entries.append(live_entries(store))
            sizes.append(dir_bytes(store.path))
    return entries, sizes


def test_a_sweep_is_due_after_a_quarter_of_the_retention_of_event_time(tmp_path):
    store = HistoryStore(tmp_path / "h", max_count=100, max_age=300.0)
    store.apply([Decided("r0", "u", "ip", "read", "allow", "ok", T0)], 1)
    assert store.sweep_due()  # from 0 to T0: the first batch after opening an empty store
    store.sweep()
    store.apply([Decided("r1", "u", "ip", "read", "allow", "ok", T0 + 74.9)], 2)
    assert not store.sweep_due()
    store.apply([Decided("r2", "u", "ip", "read", "allow", "ok", T0 + 75)], 3)
    assert store.sweep_due()
    assert store.sweep() == 0 and not store.sweep_due()
    store.apply([Decided("r3", "u", "ip", "read", "allow", "ok", T0 + 375)], 4)
    assert store.sweep() == 2  # r0 and r1 are older than 300 s before the watermark
    assert [e.request_id for e in store.page("u", 10)[0]] == ["r3", "r2"]
    store.close()


def test_the_directory_stays_bounded_with_event_time_sweeps_and_grows_without(tmp_path):
    swept = HistoryStore(tmp_path / "swept", max_count=100, max_age=300.0)
    unswept = HistoryStore(tmp_path / "unswept", max_count=100, max_age=300.0)
    (kept, bounded), (all_entries, growing) = run(swept, 700_000, sweep=True), run(unswept, 700_000, sweep=False)
    # 300 s of retention is 300,000 entries; a sweep every 75 s of event time keeps at most 375,000
    assert max(kept) <= 376_000 and kept[-1] >= 300_000, kept
    assert all_entries == [100_000 * (i + 1) for i in range(7)]
    # On disk: what background compaction has reached at any moment varies with the machine's load, so
    # the sizes are compared once both stores are flushed and compacted (deterministic): the swept
    # store holds at most 375,000 of the 700,000 entries, the unswept one all of them.
    for store in (swept, unswept):
        store._db.flush()
        store._db.compact_range(None, None)
    swept_bytes, unswept_bytes = dir_bytes(swept.path), dir_bytes(unswept.path)
    assert swept_bytes < 0.7 * unswept_bytes, (swept_bytes, unswept_bytes, bounded, growing)
    assert len(swept.page("u0", 10)[0]) == 0  # the first users are gone (700 s ago), not only hidden
    swept.close()
    unswept.close()
