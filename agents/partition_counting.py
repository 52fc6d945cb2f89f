"""The shell every counting service shares: partitioned stores, changelog restore, flushes, rewinds.

A counting service consumes one input topic in batches, keeps counters per input partition in
RocksDB (backed by a compacted changelog topic co-partitioned with the input), and writes its
answers through :mod:`streams.output` (one transaction per partition and flush under exactly-once).
The limiter (request events -> decisions) and the descriptor counter (rate limit service hits ->
answers) differ only in :meth:`PartitionCounting.process`: how one fetched batch of one partition is
decoded, decided and written. Everything else — which partitions are owned, restoring their stores,
never counting a record twice after a rewind, flushing every ``flush_interval`` seconds or
``flush_events`` records — lives here once.
"""

import asyncio
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable

from aiokafka import TopicPartition
from prometheus_client import Gauge

from agents.intake import Rejection, dead_letter_value
from agents.reply_routes import ReplyRoutes
from agents.state_codec import STATE_CODEC
from streams import metrics
from streams.batch_consumer import BatchConsumer
from streams.changelog import restore
from streams.flushing import Flusher
from streams.kafka_io import make_consumer
from streams.output import Ends, make_outputs
from streams.rocks_state import RocksPartitionStore
from streams.settings import Settings
from streams.state import PartitionStore
from streams.stopping import bounded

__all__ = ["PartitionCounting"]

logger = logging.getLogger(__name__)

#: Seconds the final flush of a stop may take: delivering at most one flush interval of changes and
#: committing takes well under a second with the broker up; with the broker gone it would never end.
#: Abandoned, it leaves what a crash leaves: the next owner restores the last completed flush.
FINAL_FLUSH_TIMEOUT = 10.0


class PartitionCounting(BatchConsumer):
    """Subclasses implement :meth:`process`; hooks :meth:`assigned`, :meth:`revoked` and :meth:`feeding` may add to it."""

    #: Gauges of this service's owned partitions and live counters.
    assigned_gauge: Gauge = metrics.ASSIGNED
    counters_gauge: Gauge = metrics.COUNTERS

    def __init__(self, settings: Settings, *, topic: str, group: str, changelog_topic: str, state_dir: Path,
                 role: str) -> None:
        super().__init__(settings)
        self.topic, self.group, self.changelog_topic = topic, group, changelog_topic
        self.stores: dict[int, PartitionStore] = {}
        self.positions: dict[int, int] = {}  # next input offset per partition, not yet flushed
        self.stats = {"events": 0, "dead_letters": 0, "flushes": 0}
        self._since_flush = 0
        self._last_flush = 0.0
        #: Routed replies (``schemas.replies``); the worker sets the replies topic's real partition count.
        self.replies = ReplyRoutes(settings.replies_topic, settings.replies_partitions)
        #: Opens the store of a partition (tests substitute an in-memory one).
        self.open_store: Callable[[int], PartitionStore] = (
            lambda partition: RocksPartitionStore(state_dir, partition, STATE_CODEC))
        self.outputs = make_outputs(settings, role, group, topic)
        self.flusher = Flusher(self.outputs, changelog_topic, topic)
        self.restorer = None

    async def start(self) -> None:
        """Connect; the subscription waits for :meth:`run`."""
        self.restorer = make_consumer(self.settings, group_id=None, isolation_level="read_committed")
        await self.outputs.start()
        await self.restorer.start()
        await super().start(subscribe=False)
        self._last_flush = time.monotonic()

    async def acquire(self, partitions: list[int]) -> None:
        """Open and restore the stores of newly assigned partitions, and seek to their positions."""
        async with self.lock:
            await self.assigned(partitions)

    async def assigned(self, partitions: list[int]) -> None:
        await self.flusher.settle()
        await asyncio.gather(*(self.outputs.open(p) for p in partitions))
        for partition in partitions:
            store = self.open_store(partition)
            await restore(store, self.restorer, self.changelog_topic, self.outputs.write_marker)
            self.stores[partition] = store
            if store.position is not None:
                self.consumer.seek(TopicPartition(self.topic, partition), store.position)
        self.assigned_gauge.set(len(self.stores))
        logger.info("%s: assigned partitions %s", self.group, sorted(self.stores))

    async def release(self, partitions: list[int]) -> None:
        """Flush and close the stores of revoked partitions."""
        async with self.lock:
            await self.revoked(partitions)

    async def revoked(self, partitions: list[int]) -> None:
        await self._flush()
        await self.flusher.settle()
        await self._release(partitions)

    async def _release(self, partitions: list[int]) -> None:
        for partition in partitions:
            store = self.stores.pop(partition, None)
            if store is not None:
                store.close()
            await self.outputs.close(partition)
        self.assigned_gauge.set(len(self.stores))

    async def run(self) -> None:
        """Subscribe, then consume, count and flush until :meth:`stop`."""
        self.subscribe()
        await super().run()

    async def handle(self, batches) -> None:
        """Count one getmany result, and flush when it is time (holding the lock)."""
        interval, every = self.settings.flush_interval, self.settings.flush_events
        for tp, records in batches.items():
            if not records:
                continue
            if tp.partition in self.stores:
                records = self._unseen(tp.partition, records)
                if records:
                    await self.process(tp.partition, records)
            elif tp in self.consumer.assignment():
                # Fetched while its state is still being restored: fetch these again later.
                self.consumer.seek(tp, records[0].offset)
        await self.outputs.send_all()
        if self._since_flush >= every or (time.monotonic() - self._last_flush >= interval and self.positions):
            await self._flush()

    async def process(self, partition: int, records) -> None:
        """Count one fetched batch of one partition; set ``positions``, ``_since_flush`` and ``stats``."""
        raise NotImplementedError

    def counted(self, partition: int, records) -> None:
        """Book-keeping after :meth:`process` counted ``records`` (the last sets the next position)."""
        self.positions[partition] = records[-1].offset + 1
        self._since_flush += len(records)
        self.stats["events"] += len(records)

    def _unseen(self, partition: int, records):
        """Drop records this worker already counted (a consumer rewind must never count twice)."""
        expected = self.positions.get(partition)
        if expected is None:
            expected = self.flusher.handed_off.get(partition, self.stores[partition].position)
        if expected is None or records[0].offset >= expected:
            return records
        fresh = [r for r in records if r.offset >= expected]
        logger.warning("%s: partition %d: skipped %d records below offset %d already counted",
                       self.group, partition, len(records) - len(fresh), expected)
        return fresh

    async def dead_letter(self, partition: int, record, rejection: Rejection, now: float) -> None:
        value = dead_letter_value(record.value, rejection, record.topic, record.partition, record.offset, now)
        await self.outputs.sender(partition).add(self.settings.dead_letter_topic, partition, record.key, value)
        self.stats["dead_letters"] += 1
        metrics.DEAD_LETTERS.labels(rejection.reason).inc()
        logger.info("dead letter at %s[%d]@%d: %s", record.topic, record.partition, record.offset, rejection.reason)

    def feeding(self) -> Callable[[Ends], Awaitable[None]] | None:
        """What a flush's completion hands to in-process consumers (none here)."""
        return None

    async def flush(self) -> None:
        """Flush and wait until it is complete (delivered, committed, on disk)."""
        async with self.lock:
            await self._flush()
            await self.flusher.settle()
            self.stats["flushes"] = self.flusher.completed

    async def _flush(self) -> None:
        """Hand the counted positions to the flush cycle (``streams.flushing``); it completes in the background."""
        if not self.positions or self.consumer is None:
            return
        positions, self.positions = {p: o for p, o in self.positions.items() if p in self.stores}, {}
        await self.flusher.start(positions, self.stores, self.consumer, self.feeding())  # settles the previous first
        self._since_flush, self._last_flush = 0, time.monotonic()
        self.stats["flushes"] = self.flusher.completed
        self.counters_gauge.set(sum(map(len, self.stores.values())))

    async def close(self) -> None:
        """Final flush, then close stores and clients (also on cancellation); each step bounded, as the
        broker may be gone. No final flush after an abandoned batch: its counts and positions may not
        match, and the next owner restores the last completed flush and reads on from its offsets."""
        try:
            if self.abandoned:
                logger.warning("stopping %s: no final flush after an abandoned batch", self.label)
            else:
                await bounded(self.label, "the final flush", self.flush(), FINAL_FLUSH_TIMEOUT)
        finally:
            for store in self.stores.values():
                store.close()
            self.stores.clear()
            if self.restorer is not None:
                await bounded(self.label, "the changelog restorer", self.restorer.stop())
            await super().close()
            await bounded(self.label, "its producers", self.outputs.stop())
