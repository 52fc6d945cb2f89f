"""The limiter's flush cycle: touched counters to the changelog, then delivery, offsets and RocksDB.

A flush has two parts. :meth:`Flusher.start` runs on the hot path: it snapshots the counters touched
since the last flush (tombstones for expired ones), appends them and a position marker per partition
to the changelog, and hands every record to the producer. The completion — delivery, the offset
commit (or, under exactly-once, the transaction commit) and the RocksDB write batch — then runs in
the background under at-least-once, so deciding goes on meanwhile; under exactly-once it is awaited
before :meth:`start` returns. The next flush, a rebalance and shutdown first :meth:`settle` the one
in progress, which raises its error if it failed (the limiter then stops). See docs/architecture.md,
*State and recovery*, for what this guarantees.
"""

import asyncio
import logging
import time

from aiokafka import TopicPartition

from streams import metrics
from streams.output import Outputs
from streams.settings import Settings
from streams.state import POSITION_KEY, PartitionStore, encode_position

__all__ = ["Flusher"]

logger = logging.getLogger(__name__)


class Flusher:
    """Flushes the stores of one limiter; at most one flush is completing at a time."""

    def __init__(self, settings: Settings, outputs: Outputs, stores: dict[int, PartitionStore], stats: dict) -> None:
        self.settings = settings
        self.outputs = outputs
        self.stores = stores  # the limiter's own dict: partitions come and go
        self.stats = stats
        #: Positions of the flush still completing: counted and handed off, not yet on disk.
        self.handed_off: dict[int, int] = {}
        self._completing: asyncio.Future | None = None

    async def start(self, positions: dict[int, int], consumer) -> None:
        """Flush the stores of ``positions`` (next input offset per partition) and start completing it."""
        await self.settle()
        started = time.monotonic()
        changelog = self.settings.changelog_topic
        written: dict[int, dict[bytes, bytes | None]] = {}
        for partition, position in positions.items():
            store = self.stores[partition]
            store.expire()
            records = written[partition] = store.take_dirty()
            sender = self.outputs.sender(partition)
            await sender.add_many(changelog, partition, records.items())
            await sender.add(changelog, partition, POSITION_KEY, encode_position(position))
        committed = await self.outputs.commit(positions, self.settings.limiter_group, self.settings.requests_topic,
                                              consumer)
        self.handed_off = positions
        self._completing = asyncio.ensure_future(self._complete(committed, positions, written, started, consumer))
        if self.outputs.exactly_once:
            await self.settle()

    async def _complete(self, committed, positions: dict[int, int], written: dict, started: float, consumer) -> None:
        """Once a flush's records are delivered and its offsets committed: persist RocksDB, metrics."""
        ends = await committed
        changelog = self.settings.changelog_topic
        for partition, records in written.items():
            self.stores[partition].write_disk(records, positions[partition], ends[(changelog, partition)])
        self.handed_off = {}
        self.stats["flushes"] += 1
        metrics.FLUSHES.inc()
        metrics.FLUSH_SECONDS.observe(time.monotonic() - started)
        metrics.COUNTERS.set(sum(len(s.counters) for s in self.stores.values()))
        for partition, position in positions.items():
            highwater = consumer.highwater(TopicPartition(self.settings.requests_topic, partition))
            if highwater is not None:
                metrics.LAG.labels(str(partition)).set(max(0, highwater - position))

    async def settle(self) -> None:
        """Wait for the flush in progress, if any (raising its error)."""
        completing, self._completing = self._completing, None
        if completing is not None:
            await completing
