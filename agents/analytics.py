"""Per-IP features from the decisions, in two batch stages, and detection when a window closes.

The decisions topic carries everything the features need (ip, user, request type, verdict, event
time) and is keyed by user, so the features are re-keyed by IP in two stages, each a batch aiokafka
consumer in its own group inside the Faust worker (a per-event Faust agent caps near 12k events/s;
see /work/shared/notes/performance.md and docs/analytics.md):

1. :class:`FeatureStage` (group ``<app_id>-analytics``) folds each ``decisions`` partition into
   per-window per-IP partials (:class:`WindowAggregator`). When the partition's event time (its
   largest ``ts_event`` minus ``analytics_grace``) passes a window's end, it publishes one
   :class:`schemas.flags.IpPartial` per IP to ``ip-features`` keyed by IP (the repartition step:
   once per window, IP and source partition, not per event), then a
   :class:`schemas.flags.FeaturesWatermark` to every ``ip-features`` partition. Markers are also
   repeated every ``flush_interval`` while the partition has traffic.
2. :class:`MergeStage` (group ``<app_id>-analytics-ip``) merges the partials of its ``ip-features``
   partitions (:class:`WindowMerger`). A window closes by event time: when every source partition
   has marked it closed, or, a bounded wait, when the sources that have not have been silent for
   ``analytics_idle`` wall seconds (a *forced* close, logged and counted). Then the window's feature
   frame goes through :func:`agents.detectors.detect`, flags go to ``ip-flags`` keyed by IP and one
   :class:`schemas.flags.AbuseReport` to ``abuse-reports``. Partials that arrive after a forced
   close are merged and the window is reported again (``revision`` + 1).

State is bounded by event time: a stage holds only windows not yet closed (stage 1 counts and logs
events older than its closed windows; stage 2 keeps at most ``analytics_corrections_kept`` forced
windows for corrections). Offsets are committed up to the first record of the oldest window still
open, so a restarted or reassigned stage rebuilds its windows from the topic (at least once: a crash
between publishing and committing can publish a partial twice; stage 2 recognises the duplicate).
"""

import asyncio
import json
import logging
import time
from typing import Callable

import msgspec
from mode import Service

from agents.batch_stage import BatchStage
from agents.blocklist import BanBook, register_blocklist_agent
from agents.detectors import base_frame, detect, parse_networks
from agents.ip_windows import WindowAggregator
from agents.window_merger import MergedWindow, WindowMerger
from schemas.flags import AbuseReport, FeaturesWatermark, IpFlag, IpPartial, ReportedIp, ReportShare
from streams.kafka_io import partition_for
from streams.metrics import ANALYTICS_FORCED, ANALYTICS_LATE_EVENTS, ANALYTICS_LATE_PARTIALS
from streams.settings import Settings
from streams.tables import ControlTable
from streams.topics import ensure_topics

__all__ = [
    "AnalyticsService",
    "FeatureStage",
    "MergeStage",
    "register_analytics",
]

logger = logging.getLogger(__name__)

class _DecisionView(msgspec.Struct):
    """The fields of a :class:`schemas.decisions.Decision` the features read (the rest is skipped)."""

    user_id: str
    ip: str
    request_type: str
    verdict: str
    ts_event: float


class FeatureStage(BatchStage):
    """Stage 1: ``decisions`` partitions -> per-window per-IP partials on ``ip-features``."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, clock)
        self.topic, self.group = settings.decisions_topic, settings.analytics_group
        self.aggregators: dict[int, WindowAggregator] = {}
        self.active: dict[int, float] = {}  # partition -> when it last had records
        self._decode = msgspec.json.Decoder(_DecisionView).decode
        self._encode = msgspec.json.Encoder().encode
        self._last_marks = 0.0
        self.stats.update(partials=0, late=0)

    def on_start(self, partitions: dict[str, int]) -> None:
        self.out_partitions = partitions[self.settings.ip_features_topic]

    def assign(self, partition: int, progress: str | None) -> None:
        """``progress``: the previous owner's published watermark; windows ending by it are not published again."""
        s = self.settings
        aggregator = self.aggregators[partition] = WindowAggregator(s.analytics_window, s.analytics_grace)
        if progress:
            aggregator.resume(float(progress))

    def revoke(self, partition: int) -> None:
        aggregator = self.aggregators.pop(partition, None)
        if aggregator is not None:
            self.stats["late"] += aggregator.late
        self.active.pop(partition, None)
        self.positions.pop(partition, None)

    async def process(self, partition: int, records, now: float) -> None:
        aggregator = self.aggregators.get(partition)
        if aggregator is None:
            return
        add, decode, late = aggregator.add, self._decode, aggregator.late
        for record in records:
            try:
                d = decode(record.value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                self.stats["bad"] += 1
                continue
            add(d.ip, d.user_id, d.request_type, d.verdict, d.ts_event, record.offset)
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
        for ip, partial in aggregator.partials(partition, closed):
            key = ip.encode()
            await add(topic, partition_for(key, n), key, encode(partial))
            self.stats["partials"] += 1
        await self.mark(partition, aggregator)

    async def mark(self, partition: int, aggregator: WindowAggregator) -> None:
        value = self._encode(FeaturesWatermark(source=partition, closed_until=aggregator.closed_until))
        for out in range(self.out_partitions):
            await self.sender.add(self.settings.ip_features_topic, out, None, value)

    async def tick(self, now: float) -> None:
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


class MergeStage(BatchStage):
    """Stage 2: ``ip-features`` -> complete windows -> detectors -> ``ip-flags`` and ``abuse-reports``."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, clock)
        s = settings
        self.topic, self.group = s.ip_features_topic, s.analytics_merge_group
        self.merger = WindowMerger(s.analytics_window, s.partitions, s.analytics_idle, s.analytics_corrections_kept)
        self._counted = dict(self.merger.counts)
        self.networks = parse_networks(s.allowlist)
        self._decode = msgspec.json.Decoder(IpPartial | FeaturesWatermark).decode
        self._encode = msgspec.json.Encoder().encode
        self.stats.update(windows=0, flags=0)

    def on_start(self, partitions: dict[str, int]) -> None:
        self.merger.sources = partitions[self.settings.decisions_topic]
        self.flag_partitions = partitions[self.settings.ip_flags_topic]

    def assign(self, partition: int, progress: str | None) -> None:
        self.merger.assign(partition, self.clock(), json.loads(progress) if progress else None)

    def revoke(self, partition: int) -> None:
        self.merger.revoke(partition)
        self.positions.pop(partition, None)

    async def process(self, partition: int, records, now: float) -> None:
        if partition not in self.merger.assigned:
            return
        merger, decode = self.merger, self._decode
        for record in records:
            try:
                item = decode(record.value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                self.stats["bad"] += 1
                continue
            if type(item) is IpPartial:
                merger.add_partial(partition, record.offset, item)
            else:
                merger.add_mark(partition, item, now)

    async def tick(self, now: float) -> None:
        for window in self.merger.ready(now):
            await self.publish(window)
        self._count_late()

    def _count_late(self) -> None:
        """Log and export what the merger saw since the last tick: forced closes and late partials."""
        counts, counted = self.merger.counts, self._counted
        if counts == counted:
            return
        for outcome in ("corrected", "duplicate", "dropped"):
            if counts[outcome] > counted[outcome]:
                ANALYTICS_LATE_PARTIALS.labels(outcome).inc(counts[outcome] - counted[outcome])
        if counts["forced"] > counted["forced"]:
            ANALYTICS_FORCED.inc(counts["forced"] - counted["forced"])
        logger.log(
            logging.WARNING if counts["dropped"] > counted["dropped"] else logging.INFO,
            "analytics windows: %s (totals: forced closes, late partials by outcome)", counts,
        )
        self._counted = dict(counts)

    async def publish(self, window: MergedWindow) -> None:
        s = self.settings
        start, ips = window.start, window.ips
        end = start + s.analytics_window
        if window.missing and not window.revision:
            logger.warning("window %.0f forced out after %.0f s without sources %s", start, s.analytics_idle, window.missing)
        frame = base_frame(acc.row(ip) for ip, acc in ips.items())
        flags, stats, scored = detect(frame, start, end, s, self.networks)
        for flag in flags:
            key = flag.ip.encode()
            await self.sender.add(s.ip_flags_topic, partition_for(key, self.flag_partitions), key, self._encode(flag))
        summary = report(window, end, sorted(self.merger.assigned), scored, flags, stats)
        await self.sender.add(s.abuse_reports_topic, 0, repr(start).encode(), self._encode(summary))
        self.stats["windows"] += 1
        self.stats["flags"] += len(flags)
        if flags:
            logger.info(
                "window %.0f (revision %d): %d IPs, flagged %s",
                start, window.revision, len(ips), [(f.ip, f.rules) for f in flags[:10]],
            )

    def commit_offsets(self) -> dict[int, tuple[int, str]]:
        return {
            p: (self.merger.commit_offset(p, position), json.dumps(self.merger.progress(p)))
            for p, position in self.positions.items()
            if p in self.merger.assigned
        }


def report(window: MergedWindow, end, partitions, scored, flags: list[IpFlag], stats) -> AbuseReport:
    shares = []
    for partition in partitions:
        ips = window.parts.get(partition, {})
        shares.append(ReportShare(partition, len(ips), sum(a.requests for a in ips.values()),
                                  sum(a.throttled + a.blocked for a in ips.values())))
    return AbuseReport(
        window_start=window.start,
        window_end=end,
        partitions=partitions,
        ips=len(scored),
        requests=int(scored["requests"].sum()) if len(scored) else 0,
        refused=int((scored["throttled"] + scored["blocked"]).sum()) if len(scored) else 0,
        flagged=[
            ReportedIp(f.ip, f.score, f.rules, f.features.requests, f.features.users, f.allowlisted) for f in flags
        ],
        population=stats,
        late_partials=window.late,
        revision=window.revision,
        missing_sources=window.missing,
        shares=shares,
    )


class AnalyticsService(Service):
    """Runs both stages and the blocklist reader the blocklist agent decides against."""

    def __init__(self, settings: Settings, bans: BanBook, ban_table: ControlTable, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings, self.bans, self.ban_table = settings, bans, ban_table
        self.stages = [FeatureStage(settings), MergeStage(settings)]
        self._runs: list[asyncio.Future] = []

    async def on_start(self) -> None:
        partitions = await asyncio.to_thread(ensure_topics, self.settings)
        await self.ban_table.start(partitions[self.settings.blocklist_topic])
        for stage in self.stages:
            await stage.start(partitions)

    async def on_started(self) -> None:
        self._runs = [asyncio.ensure_future(self.ban_table.run())]
        for stage in self.stages:
            task = asyncio.ensure_future(stage.run())
            task.add_done_callback(self._on_exit)
            self._runs.append(task)

    def _on_exit(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("analytics crashed: %r", task.exception())
            asyncio.ensure_future(self.crash(task.exception()))

    async def on_stop(self) -> None:
        for stage in self.stages:
            stage.stop()
        runs = [t for t in self._runs[1:] if not t.done()]
        if runs:
            await asyncio.wait(runs, timeout=30)
        if self._runs:
            self._runs[0].cancel()  # the blocklist reader follows its topic forever
        for stage in self.stages:
            await stage.close()
        await self.ban_table.stop()
        logger.info("analytics stopped: %s", [stage.stats for stage in self.stages])


def register_analytics(app, settings: Settings) -> None:
    """Add the analytics service and the blocklist agent to a Faust app."""
    bans = BanBook()
    ban_table = ControlTable(settings, settings.blocklist_topic, bans.apply)
    register_blocklist_agent(app, settings, bans, ban_table)

    @app.service
    class BoundAnalyticsService(AnalyticsService):
        def __init__(self, **kwargs) -> None:
            super().__init__(settings, bans, ban_table, **kwargs)
