"""A batch stage of the analytics: its own consumer group, a batch producer, and committed progress.

A stage folds fetched records into state and publishes what is due. Offsets are committed up to the
oldest record its open state still needs, **with the stage's progress as the commit's metadata**
(e.g. "every window ending by T is published"), so a new owner of a partition knows what the
previous one already published and does not publish it again. The rebalance listener runs while
the loop awaits I/O: folding and committing take the same lock, so a commit never sees a window
closed but not yet handed to the producer.
"""

import asyncio
import logging
import time
from typing import Any, Callable, Iterator

import msgspec
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from streams.kafka_io import BatchSender, committed_metadata, make_consumer, make_producer
from streams.metrics import ANALYTICS_BAD_RECORDS
from streams.settings import Settings

__all__ = ["BatchStage"]

logger = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, stage: "BatchStage") -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked) -> None:
        async with self._stage.lock:
            await self._stage.commit()
            for tp in revoked:
                self._stage.revoke(tp.partition)

    async def on_partitions_assigned(self, assigned) -> None:
        progress = await committed_metadata(self._stage.consumer, list(assigned))
        async with self._stage.lock:
            for tp in assigned:
                self._stage.assign(tp.partition, progress.get(tp.partition) or None)


class BatchStage:
    """Subclasses fold records into state (:meth:`process`), publish what is due (:meth:`tick`) and say
    where a new owner must start and what it must know (:meth:`commit_offsets`)."""

    topic: str
    group: str

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.clock = settings, clock
        self.positions: dict[int, int] = {}  # next offset to read, per assigned partition
        self.stats = {"records": 0, "bad": 0}
        self.lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.consumer = self.producer = self.sender = None

    async def start(self, partitions: dict[str, int]) -> None:
        """Connect and subscribe; ``partitions`` is the partition count per topic (from ``ensure_topics``)."""
        s = self.settings
        self.on_start(partitions)
        self.producer = make_producer(s)
        # read_committed: with processing_guarantee=exactly_once the limiter writes decisions in
        # transactions, and an aborted batch must not count.
        self.consumer = make_consumer(s, group_id=self.group, isolation_level="read_committed")
        await self.producer.start()
        await self.consumer.start()
        self.sender = BatchSender(self.producer)
        self.consumer.subscribe([self.topic], listener=_Listener(self))

    def on_start(self, partitions: dict[str, int]) -> None:
        pass

    def assign(self, partition: int, progress: str | None) -> None:
        raise NotImplementedError

    def revoke(self, partition: int) -> None:
        raise NotImplementedError

    async def process(self, partition: int, records, now: float) -> None:
        raise NotImplementedError

    async def tick(self, now: float) -> None:
        """Called after every fetch: publish what is due."""

    def decoded(self, partition: int, records, decode) -> Iterator[tuple[int, Any]]:
        """``(offset, value)`` of each record ``decode`` accepts; the others are counted and logged, not folded."""
        bad = 0
        for record in records:
            try:
                value = decode(record.value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                bad += 1
                continue
            yield record.offset, value
        if bad:
            self.stats["bad"] += bad
            ANALYTICS_BAD_RECORDS.labels(self.topic).inc(bad)
            logger.warning("%s partition %d: %d records could not be decoded and were skipped", self.topic, partition, bad)

    def commit_offsets(self) -> dict[int, tuple[int, str]]:
        """Per partition: the offset a new owner starts from, and the progress it is told."""
        raise NotImplementedError

    async def run(self) -> None:
        last_commit = self.clock()
        while not self._stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=100, max_records=self.settings.fetch_max_records)
            async with self.lock:
                now = self.clock()
                for tp, records in batches.items():
                    if records:
                        await self.process(tp.partition, records, now)
                        self.positions[tp.partition] = records[-1].offset + 1
                        self.stats["records"] += len(records)
                await self.tick(now)
                await self.sender.send_all()
                if now - last_commit >= self.settings.flush_interval:
                    await self.commit()
                    last_commit = now

    async def commit(self) -> None:
        """Await every delivery, then commit each partition up to its oldest open window (call holding the lock)."""
        if self.sender is None:
            return
        await self.sender.wait()
        offsets = {TopicPartition(self.topic, p): o for p, o in self.commit_offsets().items()}
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:  # rebalancing: the next owner re-reads
                logger.warning("%s: commit skipped: %s", self.group, exc)

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        try:
            async with self.lock:
                await self.commit()
        finally:
            for client in (self.consumer, self.producer):
                if client is not None:
                    await client.stop()
