"""The limiter's flush cycle: changed values to the changelog, then delivery, offsets and the local copy.

A flush has two parts. :meth:`Flusher.start` runs on the hot path: per partition it expires old
values, takes the changes (:meth:`streams.state.PartitionStore.take_changes`), appends them and a
position marker to the changelog, and hands every record to the producer
(:meth:`streams.output.Outputs.hand_off`). The completion — delivery, the offset commit (or, under
exactly-once, the transaction commit) and :meth:`~streams.state.PartitionStore.persist` — then runs
in the background when the outputs allow it, so deciding goes on meanwhile; under exactly-once it is
awaited before :meth:`start` returns. Both parts yield to the event loop after each partition: done in
one piece, a second's flush of four partitions, with the in-process feeds after it, held the loop for
10-20 ms (measured at 1,200 inline decisions/s), and every request arriving meanwhile waited for it.
The next flush, a rebalance and shutdown first :meth:`settle` the one in progress, which raises its
error if it failed (the limiter then stops). See docs/architecture.md, *State and recovery*, for what
this guarantees.
"""

import asyncio
import logging
import time
from typing import Awaitable, Callable, Mapping

from aiokafka import TopicPartition

from streams import metrics
from streams.output import Ends, Outputs
from streams.state import FlushTransaction, PartitionStore

__all__ = ["Flusher"]

logger = logging.getLogger(__name__)


class Flusher:
    """Flushes the stores it is given; at most one flush is completing at a time."""

    def __init__(self, outputs: Outputs, changelog_topic: str, input_topic: str) -> None:
        self.outputs = outputs
        self.changelog_topic = changelog_topic
        self.input_topic = input_topic  # for the lag gauge only
        #: Positions of the flush still completing: counted and handed off, not yet on disk.
        self.handed_off: dict[int, int] = {}
        #: Flushes completed since this flusher was made.
        self.completed = 0
        self._completing: asyncio.Future | None = None

    async def start(self, positions: dict[int, int], stores: Mapping[int, PartitionStore], consumer,
                    done: Callable[[Ends], Awaitable[None]] | None = None) -> None:
        """Flush the stores of ``positions`` (next input offset per partition) and start completing it.

        ``stores`` must hold every partition of ``positions``; only those stores are kept until the
        flush completes (the mapping itself is not). ``done`` is awaited last in the completion, with
        the next offset per (topic, partition) after the records delivered (committed).
        """
        await self.settle()
        started = time.monotonic()
        changelog = self.changelog_topic
        flushes: list[tuple[PartitionStore, FlushTransaction]] = []
        for partition, position in positions.items():
            store = stores[partition]
            store.expire()
            flush = store.take_changes(position)
            await self.outputs.sender(partition).add_many(changelog, partition, flush.changelog_records())
            flushes.append((store, flush))
            await asyncio.sleep(0)  # a partition at a time: the producer and the reply readers go on between
        completion = await self.outputs.hand_off(positions, consumer)
        self.handed_off = dict(positions)
        self._completing = asyncio.ensure_future(self._complete(completion, flushes, started, consumer, done))
        if not self.outputs.completes_in_background:
            await self.settle()

    async def _complete(self, completion: Awaitable[Ends], flushes: list[tuple[PartitionStore, FlushTransaction]],
                        started: float, consumer, done=None) -> None:
        """Once a flush's records are delivered and its offsets committed: persist the stores, metrics."""
        ends = await completion
        changelog = self.changelog_topic
        for store, flush in flushes:
            store.persist(flush, ends[(changelog, flush.partition)])
            await asyncio.sleep(0)  # the limiter decides on between two partitions' writes
        self.handed_off = {}
        self.completed += 1
        metrics.FLUSHES.inc()
        metrics.FLUSH_SECONDS.observe(time.monotonic() - started)
        for store, flush in flushes:
            highwater = consumer.highwater(TopicPartition(self.input_topic, flush.partition))
            if highwater is not None:
                metrics.LAG.labels(str(flush.partition)).set(max(0, highwater - flush.position))
        if done is not None:
            await done(ends)

    async def settle(self) -> None:
        """Wait for the flush in progress, if any (raising its error)."""
        completing, self._completing = self._completing, None
        if completing is not None:
            await completing
