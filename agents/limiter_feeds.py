"""The limiter's in-process consumers of its decisions: who is fed, with what, and when.

A consumer of the ``decisions`` topic in the same process (the history, the first analytics stage)
is :meth:`DecisionFeeds.attach`-ed to the limiter instead of reading the topic back: it follows the
partitions the limiter owns and, once a flush is delivered (under exactly-once, committed), is handed
the decisions that flush wrote, already decoded (``streams.in_process``).
"""

import asyncio
from typing import Awaitable, Callable

from streams.output import Ends

__all__ = ["DecisionFeeds"]


class DecisionFeeds:
    """Mixed into :class:`agents.limiter.Limiter` (which sets ``settings`` and ``stopping``)."""

    def init_feeds(self) -> None:
        #: The attached consumers, how many to wait for before subscribing, and the decisions of each
        #: partition since the last flush (None: nobody to feed).
        self.feeds: list = []
        self.expected_feeds = 0
        self.decided: dict[int, list] | None = None

    def attach(self, consumer) -> None:
        """Feed ``consumer`` (a fed ``streams.folding.FoldingConsumer`` of the decisions topic) in process:
        the partitions this limiter owns, and the decisions of each flush once it is complete."""
        self.feeds.append(consumer)
        self.decided = {}

    async def feeds_ready(self) -> bool:
        """Wait until every expected consumer is attached and ready; False if stopped meanwhile."""
        while len(self.feeds) < self.expected_feeds or not all(c.ready.is_set() for c in self.feeds):
            if self.stopping:
                return False
            await asyncio.sleep(0.05)
        return True

    async def feeds_assigned(self, partitions: list[int]) -> None:
        for consumer in self.feeds:
            await consumer.fed_assigned(partitions)

    async def feeds_revoked(self, partitions: list[int]) -> None:
        for consumer in self.feeds:
            await consumer.fed_revoked(partitions)

    def feeding(self) -> Callable[[Ends], Awaitable[None]] | None:
        """The completion of a flush for the attached consumers: the decisions it delivered, per partition,
        at the offsets ending where the delivery (the transaction) ended; past the commit marker next."""
        if self.decided is None:
            return None
        decided, self.decided = self.decided, {}
        topic, feeds = self.settings.decisions_topic, self.feeds
        marker = 1 if self.settings.processing_guarantee == "exactly_once" else 0

        async def done(ends: Ends) -> None:
            for partition, values in decided.items():
                end = ends.get((topic, partition))
                if end is not None and values:
                    for consumer in feeds:
                        await consumer.feed(partition, end - len(values), values, end + marker)

        return done
