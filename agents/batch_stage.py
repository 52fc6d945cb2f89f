"""A batch stage of the analytics: a folding consumer with a batch producer and committed progress.

A stage folds decoded records into state (:meth:`BatchStage.process`) and publishes what is due
(:meth:`BatchStage.publish_due`). Offsets are committed up to the oldest record its open state still
needs, **with the stage's progress as the commit's metadata** (e.g. "every window ending by T is
published"), so a new owner of a partition knows what the previous one already published and does
not publish it again. Folding, publishing and committing happen under the consumer's lock, which the
rebalance hooks take too, so a commit never sees a window closed but not yet handed to the
producer. The subscription, the fetch loop, the commit and the in-process feed are
:class:`streams.folding.FoldingConsumer`'s.
"""

import logging
import time
from typing import Any, Callable, Iterable

from streams.batch_consumer import committed
from streams.folding import FoldingConsumer
from streams.kafka_io import BatchSender, make_producer
from streams.metrics import ANALYTICS_BAD_RECORDS
from streams.settings import Settings
from streams.stopping import bounded

__all__ = ["BatchStage"]

logger = logging.getLogger(__name__)


class BatchStage(FoldingConsumer):
    """Subclasses fold values into state (:meth:`process`), publish what is due (:meth:`publish_due`) and
    say where a new owner must start and what it must know (:meth:`commit_offsets`)."""

    def __init__(self, settings: Settings, fed: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, fed=fed, clock=clock)
        self.commit_interval = settings.flush_interval
        self.producer = self.sender = None

    async def start(self, partitions: dict[str, int]) -> None:
        """Connect (and subscribe, unless fed); ``partitions`` is the partition count per topic (``ensure_topics``)."""
        self.on_start(partitions)
        self.producer = make_producer(self.settings)
        await self.producer.start()
        self.sender = BatchSender(self.producer)
        await super().start()

    def on_start(self, partitions: dict[str, int]) -> None:
        pass

    def assign(self, partition: int, progress: str | None) -> None:
        raise NotImplementedError

    def revoke(self, partition: int) -> None:
        raise NotImplementedError

    async def process(self, partition: int, items: Iterable[tuple[int, Any]], now: float) -> None:
        """Fold the ``(offset, value)`` pairs of one partition."""
        raise NotImplementedError

    async def publish_due(self, now: float) -> None:
        """Called after every fetch (or feed wait): publish what is due."""

    async def open(self, partitions: list[int]) -> dict[int, int | None]:
        """Resume each partition from its commit: the previous owner's progress, and its offset."""
        found = await committed(self.consumer, self.topic, partitions)
        for partition in partitions:
            meta = found.get(partition)
            self.assign(partition, (meta.metadata or None) if meta is not None else None)
        return {p: (found[p].offset if p in found else None) for p in partitions}

    async def drop(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.revoke(partition)

    async def fold(self, partition: int, items, end: int) -> None:
        await self.process(partition, items, self.clock())

    async def tick(self, now: float) -> None:
        await self.publish_due(now)
        await self.sender.send_all()

    def on_bad(self, partition: int, bad: int) -> None:
        ANALYTICS_BAD_RECORDS.labels(self.topic).inc(bad)
        super().on_bad(partition, bad)

    async def commit_state(self) -> None:
        """Await every delivery, then commit each partition up to its oldest open window (call holding the lock)."""
        if self.sender is None:
            return
        await self.sender.wait()
        await super().commit_state()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.producer is not None:
                await bounded(self.label, "its producer", self.producer.stop())
