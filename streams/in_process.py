"""Fed in process: a folding consumer handed the values the writer of its topic delivered.

Whoever writes the topic in this process (the limiter, for the ``decisions`` topic) tells a fed
:class:`streams.folding.FoldingConsumer` which partitions it owns (:meth:`InProcessFeed.fed_assigned`,
:meth:`InProcessFeed.fed_revoked`) and hands it the values it has delivered
(:meth:`InProcessFeed.feed`): already decoded, with their offsets, once the delivery (under
exactly-once, the transaction) is complete, never before. A partition first catches up from the
topic, from where its state stands (``open``; else the group's commit; else the beginning) to the
end offset at assignment; values fed meanwhile wait. A feed that does not start where the partition
stands is preceded by a read of the gap from the topic (records another writer put there), and the
part of a feed already folded is skipped, so the state sees every record of the topic once, in
order, as a reader of the topic would — without fetching or decoding what this process wrote.
"""

import asyncio
import logging

from aiokafka import TopicPartition
from prometheus_client import Counter

from streams.batch_consumer import committed

__all__ = ["FOLDED", "InProcessFeed"]

logger = logging.getLogger(__name__)

FOLDED = Counter("ratewarden_folded_records_total",
                 "Records folded into history or analytics state, by source (topic, fed); not_held: fed for a "
                 "partition no longer held here, left to its next owner", ["topic", "source"])


class _Fed:
    """A fed partition: the next offset folded, the offset a topic read must reach (None: live), waiting feeds."""

    __slots__ = ("position", "target", "pending")

    def __init__(self, position: int) -> None:
        self.position, self.target, self.pending = position, None, []


class InProcessFeed:
    """The fed mode of :class:`streams.folding.FoldingConsumer` (whose ``open``, ``revoked``, ``fold``,
    ``positions`` and fetch steps it uses); :meth:`run_fed` is its loop."""

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
            if state is None:  # given up, or closing: the partition's next owner reads these from the topic
                self.stats["not_held"] += len(values)
                FOLDED.labels(self.topic, "not_held").inc(len(values))
                logger.info("%s partition %d is not held here: %d fed records left to its next owner, who reads "
                            "them from the topic", self.topic, partition, len(values))
                return
            state.pending.append((base, values, after))
            if state.target is None:
                await self._drain(partition, state)
            self.progressed()

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
        """Fold fed values from ``state.position`` on, a slice at a time, the loop serving others after each
        (the last too: a flush feeds every partition to every consumer in turn, and in one piece the folds
        of a second's decisions held the limiter sharing the loop for 10-20 ms)."""
        first, n, step = state.position, len(values), self.fed_slice
        for i in range(0, n, step):
            end = after if i + step >= n else first + i + step
            part = values[i:i + step] if n > step else values
            await self.fold(partition, part if self.values_only else enumerate(part, first + i), end)
            state.position = self.positions[partition] = end
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
