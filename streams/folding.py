"""A batch consumer that folds records into per-partition state, read from its topic or fed in process.

*Subscribed* (the default), a :class:`FoldingConsumer` is a :class:`~streams.batch_consumer.BatchConsumer`
of its own group: it decodes each fetched record and folds ``(offset, value)`` pairs into the state
of the record's partition (:meth:`FoldingConsumer.fold`), then publishes what is due
(:meth:`FoldingConsumer.tick`) and every ``commit_interval`` commits :meth:`FoldingConsumer.commit_offsets`.

*Fed* (``fed=True``), it joins no group: the writer of the topic in this process hands it the
values it delivered (:class:`streams.in_process.InProcessFeed`, which it inherits).
"""

import asyncio
import logging
import time
from typing import Any, Callable, Iterable, Iterator

import msgspec
from aiokafka import TopicPartition

from streams.batch_consumer import BatchConsumer, Offsets
from streams.in_process import FOLDED, InProcessFeed
from streams.settings import Settings
from streams.stopping import bounded

__all__ = ["FoldingConsumer", "FOLDED"]

logger = logging.getLogger(__name__)


class FoldingConsumer(InProcessFeed, BatchConsumer):
    """Subclasses set ``decode`` and implement :meth:`open`, :meth:`drop` and :meth:`fold`."""

    decode: Callable[[bytes], Any]
    #: Seconds between commits of :meth:`commit_offsets` (None: this consumer never commits).
    commit_interval: float | None = None
    #: Subscribed: :attr:`positions` follow the consumer's position after every fetch (past markers).
    track_position = False
    #: :meth:`fold` is given the values alone, not ``(offset, value)`` pairs.
    values_only = False
    #: Fed values folded per step (a flush can hand over tens of thousands): small enough that the
    #: limiter sharing the loop decides a fetched batch between two steps, not only after the whole flush.
    fed_slice = 1_000

    def __init__(self, settings: Settings, fed: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings)
        self.fed, self.clock = fed, clock
        self.positions: dict[int, int] = {}  # next offset folded, per held partition
        self.stats = {"records": 0, "fed": 0, "bad": 0, "not_held": 0}
        self._fed = {}  # fed: the state of each partition (streams.in_process)
        self._progress = asyncio.Event()
        self._last_commit = clock()

    async def open(self, partitions: list[int]) -> dict[int, int | None]:
        """Open the state of ``partitions``; the offset each must be read from (None: the group's commit)."""
        raise NotImplementedError

    async def drop(self, partitions: list[int]) -> None:
        """Close the state of ``partitions`` (after their last commit)."""
        raise NotImplementedError

    async def fold(self, partition: int, items: Iterable[tuple[int, Any]], end: int) -> None:
        """Fold ``(offset, value)`` pairs (or values: :attr:`values_only`) of ``partition``; ``end`` is the
        next offset after them."""
        raise NotImplementedError

    async def tick(self, now: float) -> None:
        """After every fetch (or idle wait): publish what is due."""

    def commit_offsets(self) -> Offsets:
        return {}

    def on_bad(self, partition: int, bad: int) -> None:
        logger.warning("%s partition %d: %d records could not be decoded and were skipped", self.topic, partition, bad)

    def decoded(self, partition: int, records) -> Iterator[tuple[int, Any]]:
        """``(offset, value)`` of each record :attr:`decode` accepts; the others are counted and skipped."""
        decode, bad = self.decode, 0
        for record in records:
            try:
                value = decode(record.value)
            except (msgspec.ValidationError, msgspec.DecodeError, TypeError):
                bad += 1
                continue
            yield record.offset, value
        if bad:
            self.stats["bad"] += bad
            self.on_bad(partition, bad)

    async def start(self) -> None:
        if not self.fed:
            return await super().start()
        await super().start(subscribe=False)  # manually assigned: commits, committed offsets, catch-up reads

    # --- subscribed -------------------------------------------------------------------------------

    async def assigned(self, partitions: list[int]) -> None:
        for partition, start in (await self.open(partitions)).items():
            if start is not None:
                self.consumer.seek(TopicPartition(self.topic, partition), start)

    async def revoked(self, partitions: list[int]) -> None:
        await self.commit_state()
        await self.drop(partitions)
        for partition in partitions:
            self.positions.pop(partition, None)

    async def handle(self, batches) -> None:
        for tp, records in batches.items():
            if records:
                await self._fold_records(tp.partition, records)
        if self.track_position:  # past transaction markers too, which carry no record
            for tp in self.consumer.assignment():
                self.positions[tp.partition] = await self.consumer.position(tp)
        await self._after_fetch()

    async def _fold_records(self, partition: int, records) -> None:
        end = records[-1].offset + 1
        items = self.decoded(partition, records)
        await self.fold(partition, (value for _, value in items) if self.values_only else items, end)
        self.positions[partition] = end
        self.stats["records"] += len(records)
        FOLDED.labels(self.topic, "topic").inc(len(records))

    async def _after_fetch(self) -> None:
        now = self.clock()
        await self.tick(now)
        if self.commit_interval is not None and now - self._last_commit >= self.commit_interval:
            self._last_commit = now
            await self.commit_state()
        self.progressed()

    async def commit_state(self) -> None:
        """Commit :meth:`commit_offsets` (call holding the lock)."""
        if self.commit_interval is not None:
            await self.commit(self.commit_offsets())

    def progressed(self) -> None:
        """Wake whoever waits in :meth:`wait_progress` (a fetch or a feed has been handled)."""
        self._progress.set()
        self._progress = asyncio.Event()

    async def wait_progress(self, timeout: float) -> None:
        """Until the next fetch or feed has been handled (TimeoutError after ``timeout`` seconds)."""
        await asyncio.wait_for(self._progress.wait(), timeout)

    async def close(self) -> None:
        """Commit (bounded: the broker may be gone; not after an abandoned batch), then stop the consumer."""
        try:
            if not self.abandoned:
                await bounded(self.label, "the final commit", self._commit_locked())
            self._fed.clear()  # what the feeder still hands over, a later owner reads from the topic
        finally:
            await super().close()

    async def _commit_locked(self) -> None:
        async with self.lock:
            await self.commit_state()
