"""The flush cycle against fake Kafka clients, under both guarantees, including crashes between flushes.

A "process" here is a store, outputs and a flusher over one :class:`FakeBroker`; a crash abandons them
wherever they are, and the next owner opens a store on the same disk and restores it. Whatever the
crash, the restored values and input position are those of one flush whose changelog records all
reached the log: never values ahead of their position, never a position ahead of its values.
"""

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from kafka_fakes import FakeBroker, FakeConsumer, FakeProducer
from pair_codec import CODEC
from streams.changelog import ABORT_KEY, restore
from streams.flushing import Flusher
from streams.output import AtLeastOnceOutputs, ExactlyOnceOutputs, Outputs, make_outputs
from streams.settings import Settings
from streams.state import POSITION_KEY, MemoryPartitionStore, encode_position

CHANGELOG, INPUT, DECISIONS, GROUP = "app-windows-changelog", "requests", "decisions", "limiter"
P = 1


class Process:
    """One limiter's state machinery for partition ``P``: store on ``disk``, outputs, flusher, consumer."""

    def __init__(self, broker: FakeBroker, disk: dict, guarantee: str) -> None:
        self.broker, self.disk = broker, disk
        self.outputs: Outputs
        if guarantee == "exactly_once":
            self.outputs = ExactlyOnceOutputs(lambda p: FakeProducer(broker, f"app-limiter-{p}"), GROUP, INPUT)
        else:
            self.outputs = AtLeastOnceOutputs(lambda: FakeProducer(broker), INPUT)
        self.flusher = Flusher(self.outputs, CHANGELOG, INPUT)
        self.consumer = FakeConsumer(broker, GROUP)
        self.store: MemoryPartitionStore | None = None
        self.position = 0

    async def start(self) -> "Process":
        """Start the outputs, claim the partition and restore its store (as the limiter's acquire)."""
        await self.outputs.start()
        await self.outputs.open(P)
        self.store = MemoryPartitionStore(P, CODEC, self.disk)
        await restore(self.store, FakeConsumer(self.broker), CHANGELOG, self.outputs.write_marker)
        self.position = self.store.position or 0
        return self

    async def decide(self, *users: str) -> None:
        """Count one event per user (the next input offsets) and send a decision for each."""
        for user in users:
            expires, count = self.store.get(user) or (1_000.0, 0)
            self.store.set(user, (expires, count + 1))
            await self.outputs.sender(P).add(DECISIONS, P, user.encode(), f"{user}@{self.position}".encode())
            self.position += 1
        await self.outputs.send_all()

    async def flush(self) -> None:
        await self.flusher.start({P: self.position}, {P: self.store}, self.consumer)


def changelog(broker: FakeBroker) -> list:
    return broker.visible(CHANGELOG, P)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_flush_writes_the_changes_and_a_marker_then_commits_offsets_and_persists(guarantee):
    broker, disk = FakeBroker(), {}
    process = await Process(broker, disk, guarantee).start()
    await process.decide("alice", "bob", "alice")
    await process.flush()
    await process.flusher.settle()
    records = changelog(broker)
    assert dict(records[:-1]) == {b"alice": CODEC.encode((1_000.0, 2)), b"bob": CODEC.encode((1_000.0, 1))}
    assert records[-1] == (POSITION_KEY, encode_position(3)) and len(records) == 3
    assert [k for k, _ in broker.visible(DECISIONS, P)] == [b"alice", b"bob", b"alice"]
    assert broker.committed[GROUP] == {TopicPartition(INPUT, P): 3}
    assert (process.store.position, process.store.changelog_next) == (3, 3)
    assert (process.flusher.completed, process.flusher.handed_off) == (1, {})
    rebuilt = await Process(broker, {}, guarantee).start()  # disk lost: everything from the changelog
    assert rebuilt.store.snapshot() == process.store.snapshot() and rebuilt.store.position == 3


async def test_at_least_once_completes_in_the_background_while_deciding_goes_on():
    broker = FakeBroker()
    process = await Process(broker, {}, "at_least_once").start()
    await process.decide("alice")
    broker.acknowledge = False
    await process.flush()  # returns at once: the delivery is not confirmed yet
    assert process.flusher.handed_off == {P: 1} and process.store.position is None
    await process.decide("alice", "bob")  # counted meanwhile: belongs to the next flush
    broker.confirm()
    await process.flusher.settle()
    assert (process.store.position, process.flusher.handed_off) == (1, {})
    await process.flush()
    await process.flusher.settle()
    records = changelog(broker)
    assert dict(records[-3:-1]) == {b"alice": CODEC.encode((1_000.0, 2)), b"bob": CODEC.encode((1_000.0, 1))}
    assert records[-1] == (POSITION_KEY, encode_position(3)) and len(records) == 5
    assert process.store.position == 3


async def test_expired_values_are_tombstoned_in_the_flush():
    broker = FakeBroker()
    process = await Process(broker, {}, "at_least_once").start()
    await process.decide("alice")
    await process.flush()
    await process.flusher.settle()
    process.store.watermark = 1_000.0
    await process.decide("bob")
    process.store.set("bob", (2_000.0, 1))
    await process.flush()
    await process.flusher.settle()
    assert dict(changelog(broker)[2:4]) == {b"alice": None, b"bob": CODEC.encode((2_000.0, 1))}


async def _after_one_completed_flush(guarantee: str) -> tuple[FakeBroker, dict, Process, dict]:
    broker, disk = FakeBroker(), {}
    process = await Process(broker, disk, guarantee).start()
    await process.decide("alice", "bob")
    await process.flush()
    await process.flusher.settle()
    return broker, disk, process, process.store.snapshot()


async def test_a_failed_delivery_stops_the_flush_and_restore_yields_the_last_completed_one():
    broker, disk, process, completed = await _after_one_completed_flush("at_least_once")
    await process.decide("alice", "carol", "dave")
    broker.fail = True
    await process.flush()
    with pytest.raises(KafkaError):
        await process.flusher.settle()
    broker.fail = False
    successor = await Process(broker, disk, "at_least_once").start()
    assert successor.store.snapshot() == completed and successor.store.position == 2


@pytest.mark.parametrize("landed", [0, 1])
async def test_a_crash_after_hand_off_drops_the_unclosed_tail_and_marks_it_aborted(landed):
    """The process dies after handing a flush off: ``landed`` changelog batches of it reached the log
    (a batch holds four records, so the position marker is in the second), its delivery unconfirmed."""
    broker, disk, process, completed = await _after_one_completed_flush("at_least_once")
    await process.decide("alice", "bob", "carol", "dave", "erin")
    broker.accept, broker.acknowledge = landed, False
    await process.flush()
    await asyncio.sleep(0)  # the completion waits for a confirmation that never comes: the process dies
    broker.accept, broker.acknowledge = None, True
    successor = await Process(broker, disk, "at_least_once").start()
    assert successor.store.snapshot() == completed and successor.store.position == 2
    assert changelog(broker)[-1] == ((ABORT_KEY, b"") if landed else (POSITION_KEY, encode_position(2)))
    await successor.decide("alice")  # the successor goes on from the completed flush
    await successor.flush()
    await successor.flusher.settle()
    again = await Process(broker, {}, "at_least_once").start()
    assert again.store.snapshot() == {**completed, "alice": (1_000.0, 2)} and again.store.position == 3


async def test_a_crash_after_the_whole_flush_landed_restores_that_flush_not_the_committed_offset():
    broker, disk, process, _ = await _after_one_completed_flush("at_least_once")
    await process.decide("alice", "carol")
    broker.acknowledge = False
    await process.flush()  # every record lands; the process dies before it learns so
    flushed = process.store.snapshot()
    broker.acknowledge = True
    successor = await Process(broker, disk, "at_least_once").start()
    assert successor.store.snapshot() == flushed and successor.store.position == 4
    assert broker.committed[GROUP] == {TopicPartition(INPUT, P): 2}  # advisory: restore does not use it


async def test_exactly_once_a_crash_before_the_commit_is_aborted_by_the_next_owner():
    broker, disk, process, completed = await _after_one_completed_flush("exactly_once")
    await process.decide("alice", "carol")  # sent inside the open transaction, never committed
    successor = await Process(broker, disk, "exactly_once").start()  # fences the zombie, aborts its records
    assert successor.store.snapshot() == completed and successor.store.position == 2
    assert [k for k, _ in broker.visible(DECISIONS, P)] == [b"alice", b"bob"]
    assert broker.committed[GROUP] == {TopicPartition(INPUT, P): 2}
    with pytest.raises(ProducerFenced):  # the zombie can no longer write or commit
        await process.flush()


@pytest.mark.parametrize(("guarantee", "kind"), [("at_least_once", AtLeastOnceOutputs),
                                                  ("exactly_once", ExactlyOnceOutputs)])
def test_the_processing_guarantee_picks_the_outputs(tmp_path, guarantee, kind):
    settings = Settings(var_dir=tmp_path, kafka_bootstrap_servers="unused:9092", processing_guarantee=guarantee)
    outputs = make_outputs(settings)
    assert type(outputs) is kind and outputs.completes_in_background is (kind is AtLeastOnceOutputs)


async def test_both_parts_of_a_flush_let_the_loop_serve_others_between_partitions():
    """Done in one piece, a flush of several partitions held the event loop (and every inline request
    waiting on the limiter) for its whole length; each partition is now a step of its own."""
    broker, ticks, seen = FakeBroker(), [0], []

    class Watched(MemoryPartitionStore):
        def take_changes(self, position):
            seen.append(("changes", self.partition, ticks[0]))
            return super().take_changes(position)

        def persist(self, flush, changelog_next):
            seen.append(("persist", self.partition, ticks[0]))
            super().persist(flush, changelog_next)

    outputs = AtLeastOnceOutputs(lambda: FakeProducer(broker), INPUT)
    await outputs.start()
    stores = {}
    for partition in (0, 1, 2):
        await outputs.open(partition)
        stores[partition] = Watched(partition, CODEC, {})
        stores[partition].set(f"user-{partition}", (1_000.0, 1))
    flusher, running = Flusher(outputs, CHANGELOG, INPUT), True

    async def other_task() -> None:
        while running:
            ticks[0] += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_task())
    await flusher.start({0: 5, 1: 7, 2: 9}, stores, FakeConsumer(broker, GROUP))
    await flusher.settle()
    running = False
    await other
    for step in ("changes", "persist"):
        steps = [(partition, tick) for kind, partition, tick in seen if kind == step]
        assert [partition for partition, _ in steps] == [0, 1, 2]
        assert steps[0][1] < steps[1][1] < steps[2][1], f"no other task ran between two partitions' {step}"
    assert [stores[p].position for p in (0, 1, 2)] == [5, 7, 9]
