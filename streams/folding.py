"""A batch consumer that folds records into per-partition state, read from its topic or fed in process.

*Subscribed* (the default), a :class:`FoldingConsumer` is a :class:`~streams.batch_consumer.BatchConsumer`
of its own group: it decodes each fetched record and folds ``(offset, value)`` pairs into the state
of the record's partition (:meth:`FoldingConsumer.fold`), then publishes what is due
(:meth:`FoldingConsumer.tick`) and every ``commit_interval`` commits :meth:`FoldingConsumer.commit_offsets`.

*Fed* (``fed=True``), it joins no group. Whoever writes the topic in this process (the limiter, for
the ``decisions`` topic) tells it which partitions it owns (:meth:`fed_assigned`,
:meth:`fed_revoked`) and hands it the values it has delivered (:meth:`feed`): already decoded, with
their offsets, once delivery (or the transaction) is complete. A partition first catches up from
the topic, from where its state stands (:meth:`open`; else the group's commit; else the beginning)
to the end offset at assignment; values fed meanwhile wait. A feed that does not start where the
partition stands is preceded by a read of the gap from the topic, and the part of a feed already
folded is skipped, so the state sees every record of the topic once, in order, as a reader would.
"""

import asyncio
import logging
import time
from typing import Any, Callable, Iterable, Iterator

import msgspec
from aiokafka import TopicPartition
from prometheus_client import Counter

from streams.batch_consumer import BatchConsumer, Offsets, committed
from streams.settings import Settings

__all__ = ["FoldingConsumer", "FOLDED"]

logger = logging.getLogger(__name__)

#: Fed values folded per step: a flush can hand over tens of thousands.
_SLICE = 5_000

FOLDED = Counter("ratewarden_folded_records_total", "Records folded into history or analytics state, by source",
                 ["topic", "source"])


class _Fed:
    """A fed partition: the next offset folded, the offset a topic read must reach (None: live), waiting feeds."""

    __slots__ = ("position", "target", "pending")

    def __init__(self, position: int) -> None:
        self.position, self.target, self.pending = position, None, []


class FoldingConsumer(BatchConsumer):
    """Subclasses set ``decode`` and implement :meth:`open`, :meth:`drop` and :meth:`fold`."""

    decode: Callable[[bytes], Any]
    #: Seconds between commits of :meth:`commit_offsets` (None: this consumer never commits).
    commit_interval: float | None = None
    #: Subscribed: :attr:`positions` follow the consumer's position after every fetch (past markers).
    track_position = False

    def __init__(self, settings: Settings, fed: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings)
        self.fed, self.clock = fed, clock
        self.positions: dict[int, int] = {}  # next offset folded, per held partition
        self.stats = {"records": 0, "fed": 0, "bad": 0}
        self._fed: dict[int, _Fed] = {}
        self._progress = asyncio.Event()
        self._last_commit = clock()

    async def open(self, partitions: list[int]) -> dict[int, int | None]:
        """Open the state of ``partitions``; the offset each must be read from (None: the group's commit)."""
        raise NotImplementedError

    async def drop(self, partitions: list[int]) -> None:
        """Close the state of ``partitions`` (after their last commit)."""
        raise NotImplementedError

    async def fold(self, partition: int, items: Iterable[tuple[int, Any]], end: int) -> None:
        """Fold ``(offset, value)`` pairs of ``partition``; ``end`` is the next offset after them."""
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
        await self.fold(partition, self.decoded(partition, records), end)
        self.positions[partition] = end
        self.stats["records"] += len(records)
        FOLDED.labels(self.topic, "topic").inc(len(records))

    async def _after_fetch(self) -> None:
        now = self.clock()
        await self.tick(now)
        if self.commit_interval is not None and now - self._last_commit >= self.commit_interval:
            self._last_commit = now
            await self.commit_state()
        self._progress.set()
        self._progress = asyncio.Event()

    async def commit_state(self) -> None:
        """Commit :meth:`commit_offsets` (call holding the lock)."""
        if self.commit_interval is not None:
            await self.commit(self.commit_offsets())

    async def wait_progress(self, timeout: float) -> None:
        """Until the next fetch or feed has been handled (TimeoutError after ``timeout`` seconds)."""
        await asyncio.wait_for(self._progress.wait(), timeout)

    async def close(self) -> None:
        try:
            async with self.lock:
                await self.commit_state()
                self._fed.clear()  # what the feeder still hands over, a later owner reads from the topic
        finally:
            await super().close()

    # --- fed --------------------------------------------------------------------------------------

    async def fed_assigned(self, partitions: list[int]) -> None:
        """The feeder now owns ``partitions``: open them and catch up from the topic."""
        async with self.lock:
            starts = await self.open(partitions)
            tps = [TopicPartition(self.topic, p) for p in partitions]
            unset = [p for p in partitions if starts.get(p) is None]
            commits = await committed(self.consumer, self.topic, unset) if unset and self.group else {}
            begins = await self.consumer.beginning_offsets(tps)
            ends = await self.consumer.end_offsets(tps)  # read_committed: the last stable offset
            for tp in tps:
                p = tp.partition
                start = starts.get(p)
                start = start if start is not None else commits[p].offset if p in commits else begins[tp]
                state = self._fed[p] = _Fed(start)
                self.positions[p] = start
                if ends[tp] > start:
                    state.target = ends[tp]
            self._reassign()
            logger.info("%s partitions %s fed in process (catching up: %s)", self.topic, partitions,
                        {p: (s.position, s.target) for p, s in self._fed.items() if s.target is not None})

    async def fed_revoked(self, partitions: list[int]) -> None:
        """The feeder gave ``partitions`` up (after its last feed of them): commit and close them."""
        async with self.lock:
            await self.revoked(partitions)
            for partition in partitions:
                self._fed.pop(partition, None)
            self._reassign()

    async def feed(self, partition: int, base: int, values: list, after: int) -> None:
        """Fold ``values``, the records at offsets ``base``.. of ``partition``, delivered (or committed);
        ``after`` is the next offset of the topic after them (past a transaction's commit marker)."""
        async with self.lock:
            state = self._fed.get(partition)
            if state is None:
                return
            state.pending.append((base, values, after))
            if state.target is None:
                await self._drain(partition, state)
            self._progress.set()
            self._progress = asyncio.Event()

    async def _drain(self, partition: int, state: _Fed) -> None:
        """Fold waiting feeds in order; at a gap, read the topic up to the feed first."""
        while state.pending and state.target is None:
            base, values, after = state.pending[0]
            if base > state.position:
                logger.info("%s partition %d: reading offsets %d..%d from the topic before the fed ones",
                            self.topic, partition, state.position, base)
                state.target = base
                tp = TopicPartition(self.topic, partition)
                self.consumer.seek(tp, state.position)
                self.consumer.resume(tp)
                return
            state.pending.pop(0)
            await self._fold_fed(partition, state, values[state.position - base:] if state.position > base else values,
                                 after)

    async def _fold_fed(self, partition: int, state: _Fed, values: list, after: int) -> None:
        """Fold fed values from ``state.position`` on, a slice at a time (the loop serves others between)."""
        first, n = state.position, len(values)
        for i in range(0, n, _SLICE):
            last = i + _SLICE >= n
            end = after if last else first + i + _SLICE
            await self.fold(partition, enumerate(values[i:i + _SLICE] if n > _SLICE else values, first + i), end)
            state.position = self.positions[partition] = end
            if not last:
                await asyncio.sleep(0)
        if not n:
            state.position = self.positions[partition] = max(state.position, after)
        self.stats["fed"] += n
        FOLDED.labels(self.topic, "fed").inc(n)

    def _reassign(self) -> None:
        """Assign every fed partition (commits need it); fetch only those catching up, from their position."""
        self.consumer.assign([TopicPartition(self.topic, p) for p in self._fed])
        for p, state in self._fed.items():
            tp = TopicPartition(self.topic, p)
            if state.target is None:
                self.consumer.pause(tp)
            else:
                self.consumer.seek(tp, state.position)

    async def run_fed(self) -> None:
        """Read the topic for the partitions catching up, and tick, until :meth:`stop`."""
        max_records = self.settings.fetch_max_records
        while not self.stopping:
            catching = [TopicPartition(self.topic, p) for p, s in self._fed.items() if s.target is not None]
            batches = {}
            if catching:
                batches = await self.consumer.getmany(*catching, timeout_ms=self.fetch_timeout_ms,
                                                      max_records=max_records)
            else:
                await asyncio.sleep(self.fetch_timeout_ms / 1000)
            async with self.lock:
                await self._catch_up(batches)
                await self._after_fetch()

    async def _catch_up(self, batches) -> None:
        for tp, records in batches.items():
            state = self._fed.get(tp.partition)
            if state is None or state.target is None or not records:
                continue
            if records[0].offset < state.position or records[-1].offset >= state.target:
                records = [r for r in records if state.position <= r.offset < state.target]
            if records:
                await self._fold_records(tp.partition, records)
                state.position = self.positions[tp.partition]
        for p, state in list(self._fed.items()):
            if state.target is None:
                continue
            tp = TopicPartition(self.topic, p)
            if state.position >= state.target or await self.consumer.position(tp) >= state.target:
                state.position = self.positions[p] = max(state.position, state.target)
                state.target = None
                self.consumer.pause(tp)
                await self._drain(p, state)
