"""Stage 1 of the analytics: each ``decisions`` partition folded into per-window per-IP partials.

When the partition's event time (its largest ``ts_event`` minus ``analytics_grace``) passes a
window's end, the stage publishes one :class:`schemas.flags.IpPartial` per IP to ``ip-features``
keyed by IP (the repartition step: once per window, IP and source partition, not per event), then a
:class:`schemas.flags.FeaturesWatermark` to every ``ip-features`` partition; markers are repeated
every ``flush_interval`` while the partition has traffic. Its commits carry the event time up to
which it has published, so a new owner does not publish those windows again.

Beside a limiter (the default worker) the stage is *fed in process* (``fed=True``): the limiter that
owns requests partition ``p`` — the only writer of decisions partition ``p`` — hands it the decisions
it delivered, with their offsets, once each flush completes, and the stage still commits its
progress to its group, so a restart or a stage-only worker resumes exactly as from its own reads.
"""

import logging
import time
from typing import Callable

import msgspec

from agents.account_features import WindowFeatures
from agents.batch_stage import BatchStage
from agents.ip_windows import WindowAggregator
from schemas.flags import FeaturesWatermark
from streams.kafka_io import partition_for
from streams.metrics import ANALYTICS_LATE_EVENTS
from streams.settings import Settings

__all__ = ["FeatureStage"]

logger = logging.getLogger(__name__)


class _DecisionView(msgspec.Struct):
    """The fields of a :class:`schemas.decisions.Decision` the features read (the rest is skipped)."""

    user_id: str
    ip: str
    request_type: str
    verdict: str
    ts_event: float
    status: int | None = None


class FeatureStage(BatchStage):
    """Stage 1: ``decisions`` partitions -> per-window per-IP partials on ``ip-features``."""

    def __init__(self, settings: Settings, fed: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, fed=fed, clock=clock)
        self.topic, self.group = settings.decisions_topic, settings.analytics_group
        self.aggregators: dict[int, WindowAggregator] = {}
        self.active: dict[int, float] = {}  # partition -> when it last had records
        self.decode = msgspec.json.Decoder(_DecisionView).decode
        self._encode = msgspec.json.Encoder().encode
        self._last_marks = 0.0
        self.stats.update(partials=0, late=0)

    def on_start(self, partitions: dict[str, int]) -> None:
        self.out_partitions = partitions[self.settings.ip_features_topic]

    def assign(self, partition: int, progress: str | None) -> None:
        """``progress``: the previous owner's published watermark; windows ending by it are not published again."""
        s = self.settings
        features = WindowFeatures(s.detectors)  # the account memory starts cold: rules that need it wait
        aggregator = self.aggregators[partition] = WindowAggregator(s.analytics_window, s.analytics_grace, features)
        if progress:
            aggregator.resume(float(progress))

    def revoke(self, partition: int) -> None:
        aggregator = self.aggregators.pop(partition, None)
        if aggregator is not None:
            self.stats["late"] += aggregator.late
        self.active.pop(partition, None)
        self.positions.pop(partition, None)

    async def process(self, partition: int, items, now: float) -> None:
        aggregator = self.aggregators.get(partition)
        if aggregator is None:
            return
        late = aggregator.late
        aggregator.add_all(items)  # a _DecisionView read from the topic, or a Decision fed in process
        if aggregator.late > late:
            ANALYTICS_LATE_EVENTS.inc(aggregator.late - late)
            logger.warning(
                "decisions partition %d: %d decisions of windows already closed (ending by %.0f: later than the grace, "
                "or re-read after a restart and published before it) not counted again",
                partition, aggregator.late - late, aggregator.closed_until,
            )
        self.active[partition] = now
        closed = aggregator.close()
        if closed:
            await self.publish(partition, aggregator, closed)

    async def publish(self, partition: int, aggregator: WindowAggregator, closed) -> None:
        topic, n, encode, add = self.settings.ip_features_topic, self.out_partitions, self._encode, self.sender.add
        for subject, partial in aggregator.partials(partition, closed):
            key = subject.encode()
            await add(topic, partition_for(key, n), key, encode(partial))
            self.stats["partials"] += 1
        await self.mark(partition, aggregator)

    async def mark(self, partition: int, aggregator: WindowAggregator) -> None:
        value = self._encode(FeaturesWatermark(source=partition, closed_until=aggregator.closed_until))
        for out in range(self.out_partitions):
            await self.sender.add(self.settings.ip_features_topic, out, None, value)

    async def publish_due(self, now: float) -> None:
        """Repeat the markers of partitions with recent traffic: stage 2 then knows they are alive."""
        if now - self._last_marks < self.settings.flush_interval:
            return
        self._last_marks = now
        for partition, seen in self.active.items():
            aggregator = self.aggregators.get(partition)
            if aggregator is not None and now - seen <= self.settings.analytics_idle:
                await self.mark(partition, aggregator)

    def commit_offsets(self) -> dict[int, tuple[int, str]]:
        return {
            p: (self.aggregators[p].commit_offset(position), repr(self.aggregators[p].closed_until))
            for p, position in self.positions.items()
            if p in self.aggregators
        }
