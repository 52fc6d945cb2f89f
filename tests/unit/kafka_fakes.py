"""In-memory stand-ins for the aiokafka clients the flush cycle and restore use: no broker.

:class:`FakeBroker` keeps one log per (topic, partition). Records written inside a transaction take
their offsets at once, as in Kafka, and stay invisible to read_committed consumers until the
transaction commits; a commit or abort appends a control record (an offset no consumer returns).
A transactional producer that starts with the id of an older one fences it and aborts what it left
open. :attr:`FakeBroker.accept`, :attr:`FakeBroker.acknowledge` and :attr:`FakeBroker.fail` play
failures: writes that never reach the log, writes that reach it but whose delivery the producer does
not learn of (until :meth:`FakeBroker.confirm`), and deliveries that fail.
"""

import asyncio
from collections import namedtuple
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

__all__ = ["FakeBroker", "FakeConsumer", "FakeProducer", "Record"]

Record = namedtuple("Record", "key value offset topic partition headers", defaults=((),))
Metadata = namedtuple("Metadata", "offset")


@dataclass
class _Entry:
    key: bytes | None
    value: bytes | None
    state: str = "committed"  # "open" (in a transaction), "aborted", "control"
    owner: object = None  # the transactional producer of an open entry


@dataclass
class FakeBroker:
    logs: dict[tuple[str, int], list[_Entry]] = field(default_factory=dict)
    committed: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)  # by consumer group
    transactional: dict[str, "FakeProducer"] = field(default_factory=dict)  # live producer per id
    accept: int | None = None  # None: every write lands; n: the next n writes land, later ones are lost
    acknowledge: bool = True  # False: deliveries from now on wait for confirm()
    fail: bool = False  # True: deliveries from now on fail with a KafkaError
    held: list = field(default_factory=list)  # (future, metadata) of unconfirmed deliveries

    def confirm(self) -> None:
        """Confirm the deliveries held since acknowledge was turned off, and acknowledge again."""
        self.acknowledge = True
        for future, metadata in self.held:
            future.set_result(metadata)
        self.held.clear()

    def log(self, topic: str, partition: int) -> list[_Entry]:
        return self.logs.setdefault((topic, partition), [])

    def append(self, topic: str, partition: int, records) -> None:
        """Write committed (key, value) records directly (test set-up)."""
        self.log(topic, partition).extend(_Entry(key, value) for key, value in records)

    def visible(self, topic: str, partition: int) -> list[tuple[bytes | None, bytes | None]]:
        """What a read_committed consumer reads from the partition, from offset 0."""
        entries = self.log(topic, partition)
        return [(e.key, e.value) for e in entries[:self.stable_end(topic, partition)] if e.state == "committed"]

    def stable_end(self, topic: str, partition: int) -> int:
        """The last stable offset: the first offset of an open transaction, else the log's end."""
        entries = self.log(topic, partition)
        return next((i for i, e in enumerate(entries) if e.state == "open"), len(entries))

    def _end_transaction(self, owner: "FakeProducer", state: str) -> None:
        for (topic, partition), entries in self.logs.items():
            touched = False
            for entry in entries:
                if entry.state == "open" and entry.owner is owner:
                    entry.state, entry.owner, touched = state, None, True
            if touched:
                entries.append(_Entry(None, None, "control"))


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self._capacity = capacity

    def append(self, key, value, timestamp, headers=None):
        if len(self.records) >= self._capacity:
            return None
        self.records.append((key, value))
        return True

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    def __init__(self, broker: FakeBroker, transactional_id: str | None = None, batch_capacity: int = 4) -> None:
        self.broker = broker
        self.transactional_id = transactional_id
        self.batch_capacity = batch_capacity
        self.fenced = False
        self._offsets: dict[TopicPartition, int] = {}
        self._group: str | None = None

    async def start(self) -> None:
        if self.transactional_id is not None:
            old = self.broker.transactional.get(self.transactional_id)
            if old is not None:
                old.fenced = True
                self.broker._end_transaction(old, "aborted")
            self.broker.transactional[self.transactional_id] = self

    async def stop(self) -> None:
        pass

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future:
        return self._write(topic, partition, batch.records)

    async def send_and_wait(self, topic: str, value=None, key=None, partition: int = 0):
        return await self._write(topic, partition, [(key, value)])

    def _write(self, topic: str, partition: int, records) -> asyncio.Future:
        if self.fenced:
            raise ProducerFenced()
        future = asyncio.get_running_loop().create_future()
        broker = self.broker
        if broker.fail:
            future.set_exception(KafkaError("delivery failed"))
            return future
        if broker.accept is not None:
            if broker.accept == 0:
                return future  # lost: the delivery never completes
            broker.accept -= 1
        log = broker.log(topic, partition)
        metadata = Metadata(len(log))
        state = "open" if self.transactional_id is not None else "committed"
        log.extend(_Entry(key, value, state, self if state == "open" else None) for key, value in records)
        if broker.acknowledge:
            future.set_result(metadata)
        else:
            broker.held.append((future, metadata))
        return future

    async def begin_transaction(self) -> None:
        self._offsets, self._group = {}, None

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        self._offsets.update(offsets)
        self._group = group_id

    async def commit_transaction(self) -> None:
        if self.fenced:
            raise ProducerFenced()
        self.broker._end_transaction(self, "committed")
        if self._group is not None:
            self.broker.committed.setdefault(self._group, {}).update(self._offsets)

    async def abort_transaction(self) -> None:
        self.broker._end_transaction(self, "aborted")


class FakeConsumer:
    """A read_committed consumer: assign, seek, getmany, end_offsets, position, commit, highwater."""

    def __init__(self, broker: FakeBroker, group_id: str | None = None) -> None:
        self.broker = broker
        self.group_id = group_id
        self.positions: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def end_offsets(self, partitions):
        return {tp: self.broker.stable_end(tp.topic, tp.partition) for tp in partitions}

    def assign(self, partitions) -> None:
        self.positions = {tp: 0 for tp in partitions}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset
        self.seeks.append((tp, offset))

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def getmany(self, tp: TopicPartition, timeout_ms: int = 0, max_records: int = 500):
        entries = self.broker.log(tp.topic, tp.partition)
        end = self.broker.stable_end(tp.topic, tp.partition)
        offset, out = self.positions[tp], []
        while offset < end and len(out) < max_records:
            entry = entries[offset]
            if entry.state == "committed":
                out.append(Record(entry.key, entry.value, offset, tp.topic, tp.partition))
            offset += 1
        self.positions[tp] = offset
        return {tp: out} if out else {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.broker.committed.setdefault(self.group_id, {}).update(offsets)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.broker.log(tp.topic, tp.partition))
