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
   partitions (:class:`WindowMerger`). A window is complete when every source partition has marked
   it closed, or has been silent for ``analytics_idle`` wall seconds; then the window's feature
   frame goes through :func:`agents.detectors.detect`, flags go to ``ip-flags`` keyed by IP and one
   :class:`schemas.flags.AbuseReport` to ``abuse-reports``.

State is bounded: a stage holds only the windows not yet closed (stage 1 drops events older than its
closed windows; stage 2 drops late partials and forces its oldest window past
``analytics_max_open_windows``). Offsets are committed up to the first record of the oldest open
window, so a restarted or reassigned stage rebuilds its open windows from the topic (at least once:
a crash between publishing and committing can publish a partial twice).
"""

import asyncio
import logging
import time
from typing import Callable

import msgspec
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from mode import Service

from agents.blocklist import BanBook, register_blocklist_agent
from agents.detectors import base_frame, detect, parse_networks
from agents.ip_windows import IpWindow, WindowAggregator, WindowMerger
from schemas.flags import AbuseReport, FeaturesWatermark, IpFlag, IpPartial, ReportedIp
from streams.kafka_io import BatchSender, make_consumer, make_producer, partition_for
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

class _Listener(ConsumerRebalanceListener):
    def __init__(self, stage: "_Stage") -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked) -> None:
        await self._stage.commit()
        for tp in revoked:
            self._stage.revoke(tp.partition)

    async def on_partitions_assigned(self, assigned) -> None:
        for tp in assigned:
            self._stage.assign(tp.partition)


class _Stage:
    """A batch consumer in its own group plus a batch producer; subclasses fold records into state."""

    topic: str
    group: str

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.clock = settings, clock
        self.positions: dict[int, int] = {}  # next offset to read, per assigned partition
        self.stats = {"records": 0, "bad": 0}
        self._stopping = asyncio.Event()
        self.consumer = self.producer = self.sender = None

    async def start(self, partitions: dict[str, int]) -> None:
        """Connect and subscribe; ``partitions`` is the partition count per topic (from ``ensure_topics``)."""
        s = self.settings
        self.on_start(partitions)
        self.producer = make_producer(s)
        # read_committed: with processing_guarantee=exactly_once the limiter writes decisions in
        # transactions, and an aborted batch must not count.
        self.consumer = make_consumer(s, group_id=self.group, isolation_level="read_committed")
        await self.producer.start()
        await self.consumer.start()
        self.sender = BatchSender(self.producer)
        self.consumer.subscribe([self.topic], listener=_Listener(self))

    def on_start(self, partitions: dict[str, int]) -> None:
        pass

    def assign(self, partition: int) -> None:
        raise NotImplementedError

    def revoke(self, partition: int) -> None:
        raise NotImplementedError

    async def process(self, partition: int, records, now: float) -> None:
        raise NotImplementedError

    async def tick(self, now: float) -> None:
        """Called after every fetch: publish what is due."""

    def commit_offsets(self) -> dict[int, int]:
        raise NotImplementedError

    async def run(self) -> None:
        last_commit = self.clock()
        while not self._stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=100, max_records=self.settings.fetch_max_records)
            now = self.clock()
            for tp, records in batches.items():
                if records:
                    await self.process(tp.partition, records, now)
                    self.positions[tp.partition] = records[-1].offset + 1
                    self.stats["records"] += len(records)
            await self.tick(now)
            await self.sender.send_all()
            if now - last_commit >= self.settings.flush_interval:
                await self.commit()
                last_commit = now

    async def commit(self) -> None:
        """Await every delivery, then commit each partition up to its oldest open window."""
        if self.sender is None:
            return
        await self.sender.wait()
        offsets = {TopicPartition(self.topic, p): o for p, o in self.commit_offsets().items()}
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:  # rebalancing: the next owner re-reads
                logger.warning("%s: commit skipped: %s", self.group, exc)

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        try:
            await self.commit()
        finally:
            for client in (self.consumer, self.producer):
                if client is not None:
                    await client.stop()


class _DecisionView(msgspec.Struct):
    """The fields of a :class:`schemas.decisions.Decision` the features read (the rest is skipped)."""

    user_id: str
    ip: str
    request_type: str
    verdict: str
    ts_event: float


class FeatureStage(_Stage):
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

    def assign(self, partition: int) -> None:
        s = self.settings
        self.aggregators[partition] = WindowAggregator(s.analytics_window, s.analytics_grace)

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
        add, decode = aggregator.add, self._decode
        for record in records:
            try:
                d = decode(record.value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                self.stats["bad"] += 1
                continue
            add(d.ip, d.user_id, d.request_type, d.verdict, d.ts_event, record.offset)
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

    def commit_offsets(self) -> dict[int, int]:
        return {
            p: self.aggregators[p].commit_offset(position)
            for p, position in self.positions.items()
            if p in self.aggregators
        }


class MergeStage(_Stage):
    """Stage 2: ``ip-features`` -> complete windows -> detectors -> ``ip-flags`` and ``abuse-reports``."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, clock)
        s = settings
        self.topic, self.group = s.ip_features_topic, s.analytics_merge_group
        self.merger = WindowMerger(s.analytics_window, s.partitions, s.analytics_idle, s.analytics_max_open_windows)
        self.networks = parse_networks(s.allowlist)
        self._decode = msgspec.json.Decoder(IpPartial | FeaturesWatermark).decode
        self._encode = msgspec.json.Encoder().encode
        self.stats.update(windows=0, flags=0)

    def on_start(self, partitions: dict[str, int]) -> None:
        self.merger.sources = partitions[self.settings.decisions_topic]
        self.flag_partitions = partitions[self.settings.ip_flags_topic]

    def assign(self, partition: int) -> None:
        self.merger.assign(partition, self.clock())

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
        for start, ips in self.merger.ready(now):
            await self.publish(start, ips)

    async def publish(self, start: float, ips: dict[str, IpWindow]) -> None:
        s = self.settings
        end = start + s.analytics_window
        frame = base_frame(acc.row(ip) for ip, acc in ips.items())
        flags, stats, scored = detect(frame, start, end, s, self.networks)
        for flag in flags:
            key = flag.ip.encode()
            await self.sender.add(s.ip_flags_topic, partition_for(key, self.flag_partitions), key, self._encode(flag))
        summary = report(start, end, sorted(self.merger.assigned), scored, flags, stats, self.merger.late)
        await self.sender.add(s.abuse_reports_topic, 0, repr(start).encode(), self._encode(summary))
        self.stats["windows"] += 1
        self.stats["flags"] += len(flags)
        if flags:
            logger.info("window %.0f: %d IPs, flagged %s", start, len(ips), [(f.ip, f.rules) for f in flags[:10]])

    def commit_offsets(self) -> dict[int, int]:
        return {
            p: self.merger.commit_offset(p, position)
            for p, position in self.positions.items()
            if p in self.merger.assigned
        }


def report(start, end, partitions, scored, flags: list[IpFlag], stats, late: int) -> AbuseReport:
    return AbuseReport(
        window_start=start,
        window_end=end,
        partitions=partitions,
        ips=len(scored),
        requests=int(scored["requests"].sum()) if len(scored) else 0,
        refused=int((scored["throttled"] + scored["blocked"]).sum()) if len(scored) else 0,
        flagged=[
            ReportedIp(f.ip, f.score, f.rules, f.features.requests, f.features.users, f.allowlisted) for f in flags
        ],
        population=stats,
        late_partials=late,
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
