"""Restore from the changelog without a broker: position markers, abort markers, wipe and resume."""

from aiokafka import TopicPartition

from kafka_fakes import FakeBroker, FakeConsumer, FakeProducer
from pair_codec import CODEC
from streams.changelog import ABORT_KEY, restore
from streams.output import AtLeastOnceOutputs
from streams.state import POSITION_KEY, MemoryPartitionStore, encode_position

TOPIC = "app-windows-changelog"
P = 2


def counter(count: int) -> tuple[float, int]:
    return (6_000.0, count)


def value(count: int) -> bytes:
    return CODEC.encode(counter(count))


def marker(position: int) -> tuple[bytes, bytes]:
    return POSITION_KEY, encode_position(position)


async def write(broker: FakeBroker, *records) -> None:
    broker.append(TOPIC, P, records)


async def restored(broker: FakeBroker, disk: dict | None = None) -> tuple[MemoryPartitionStore, FakeConsumer, int]:
    """A store opened on ``disk`` and restored through at-least-once outputs on ``broker``."""
    outputs = AtLeastOnceOutputs(lambda: FakeProducer(broker), "requests")
    await outputs.start()
    store = MemoryPartitionStore(P, CODEC, disk)
    consumer = FakeConsumer(broker)
    read = await restore(store, consumer, TOPIC, outputs.write_marker)
    return store, consumer, read


async def test_an_empty_changelog_restores_nothing():
    store, _, read = await restored(FakeBroker())
    assert (read, store.position, len(store)) == (0, None, 0)


async def test_records_are_applied_when_a_position_marker_closes_them():
    broker = FakeBroker()
    await write(broker, (b"alice", value(1)), (b"bob", value(1)), marker(10),
                (b"alice", value(2)), (b"bob", None), marker(20))
    store, _, read = await restored(broker)
    assert read == 6
    assert store.snapshot() == {"alice": counter(2)}
    assert (store.position, store.changelog_next) == (20, 6)
    assert broker.visible(TOPIC, P)[-1] == marker(20)  # nothing written back


async def test_an_unclosed_tail_is_dropped_and_closed_by_an_abort_marker():
    broker = FakeBroker()
    await write(broker, (b"alice", value(1)), marker(10), (b"alice", value(7)), (b"bob", value(3)))
    store, _, _ = await restored(broker)
    assert store.snapshot() == {"alice": counter(1)} and store.position == 10
    assert broker.visible(TOPIC, P)[-1] == (ABORT_KEY, b"")
    # The next owner flushes on top; a later restore from scratch never applies the dropped tail.
    await write(broker, (b"carol", value(1)), marker(12))
    again, _, _ = await restored(broker)
    assert again.snapshot() == {"alice": counter(1), "carol": counter(1)} and again.position == 12


async def test_an_abort_marker_discards_the_records_before_it_since_the_last_position_marker():
    broker = FakeBroker()
    await write(broker, (b"alice", value(1)), marker(10), (b"alice", value(9)), (ABORT_KEY, b""),
                (b"bob", value(1)), marker(11))
    store, _, _ = await restored(broker)
    assert store.snapshot() == {"alice": counter(1), "bob": counter(1)}
    assert (store.position, store.changelog_next) == (11, 6)


async def test_a_restore_resumes_from_the_changelog_offset_of_the_local_copy():
    broker, disk = FakeBroker(), {}
    await write(broker, (b"alice", value(1)), marker(10))
    first, _, _ = await restored(broker, disk)
    await write(broker, (b"alice", value(2)), (b"bob", value(1)), marker(15))
    store, consumer, read = await restored(broker, disk)
    assert read == 3  # only the tail after the first restore
    assert consumer.seeks == [(TopicPartition(TOPIC, P), 2)]
    assert store.snapshot() == {"alice": counter(2), "bob": counter(1)} and store.position == 15


async def test_local_state_ahead_of_the_changelog_is_wiped_and_restored_from_zero():
    broker, disk = FakeBroker(), {}
    await write(broker, (b"alice", value(1)), marker(10), (b"alice", value(2)), marker(20))
    await restored(broker, disk)
    recreated = FakeBroker()  # the changelog topic was deleted and recreated with less in it
    await write(recreated, (b"bob", value(4)), marker(3))
    store, _, read = await restored(recreated, disk)
    assert read == 2
    assert store.snapshot() == {"bob": counter(4)}
    assert (store.position, store.changelog_next) == (3, 2)


async def test_records_of_aborted_transactions_are_never_read():
    broker = FakeBroker()
    zombie = FakeProducer(broker, transactional_id="app-limiter-2")
    await zombie.start()
    await zombie.send_and_wait(TOPIC, value(1), key=b"alice", partition=P)
    await zombie.send_and_wait(TOPIC, encode_position(10), key=POSITION_KEY, partition=P)
    await zombie.commit_transaction()
    await zombie.send_and_wait(TOPIC, value(5), key=b"alice", partition=P)  # open when the owner died
    successor = FakeProducer(broker, transactional_id="app-limiter-2")
    await successor.start()  # fences the zombie and aborts its open transaction
    store, _, _ = await restored(broker)
    assert store.snapshot() == {"alice": counter(1)}
    assert (store.position, store.changelog_next) == (10, 2)  # the control records after it apply nothing
