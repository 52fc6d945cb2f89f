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
import math
import time
from typing import Callable

import msgspec
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.partitioner import murmur2
from mode import Service

from agents.blocklist import BanBook, register_blocklist_agent
from agents.detectors import base_frame, detect, parse_networks
from schemas.flags import AbuseReport, FeaturesWatermark, IpFlag, IpPartial, ReportedIp
from streams.kafka_io import BatchSender, make_consumer, make_producer
from streams.settings import Settings
from streams.tables import ControlTable
from streams.topics import ensure_topics

__all__ = [
    "AnalyticsService",
    "FeatureStage",
    "IpWindow",
    "MergeStage",
    "WindowAggregator",
    "WindowMerger",
    "partition_for",
    "register_analytics",
]

logger = logging.getLogger(__name__)

_NO_TIME = 0.0  # "nothing closed yet": event times are seconds since the epoch, never below 0


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), so any producer keyed by IP agrees with this one."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class IpWindow:
    """One IP in one window: counts, request types, refusals, first and last event time.

    ``users`` is a set in stage 1 (distinct users of one source partition) and a count in stage 2
    (the sum over sources, which is exact: a user's decisions all live in one partition).
    """

    __slots__ = ("requests", "users", "types", "throttled", "blocked", "first", "last")

    def __init__(self, ts: float, users) -> None:
        self.requests = self.throttled = self.blocked = 0
        self.users = users
        self.types: dict[str, int] = {}
        self.first = self.last = ts

    def merge(self, partial: IpPartial) -> None:
        self.requests += partial.requests
        self.users += partial.users
        for kind, n in partial.types.items():
            self.types[kind] = self.types.get(kind, 0) + n
        self.throttled += partial.throttled
        self.blocked += partial.blocked
        self.first = min(self.first, partial.first_seen)
        self.last = max(self.last, partial.last_seen)

    def row(self, ip: str) -> dict:
        top_type, top_count = max(self.types.items(), key=lambda item: (item[1], item[0]), default=("", 0))
        return dict(
            ip=ip, requests=self.requests, users=self.users, logins=self.types.get("login", 0), top_type=top_type,
            top_count=top_count, throttled=self.throttled, blocked=self.blocked, first_seen=self.first,
            last_seen=self.last,
        )


class WindowAggregator:
    """Stage 1 state of one ``decisions`` partition: the open windows, by event time."""

    def __init__(self, window: float, grace: float) -> None:
        self.window, self.grace = window, grace
        self.windows: dict[int, dict[str, IpWindow]] = {}
        self.first_offsets: dict[int, int] = {}
        self.max_ts = _NO_TIME
        self.closed_index = -(2**62)  # windows below this index are closed
        self.late = 0

    @property
    def closed_until(self) -> float:
        """Every window ending at or before this event time has been closed."""
        return max(self.closed_index * self.window, _NO_TIME)

    def add(self, ip: str, user: str, request_type: str, verdict: str, ts: float, offset: int) -> None:
        index = math.floor(ts / self.window)
        if index < self.closed_index:
            self.late += 1
            return
        ips = self.windows.get(index)
        if ips is None:
            ips = self.windows[index] = {}
            self.first_offsets[index] = offset
        acc = ips.get(ip)
        if acc is None:
            acc = ips[ip] = IpWindow(ts, set())
        acc.requests += 1
        acc.users.add(user)
        acc.types[request_type] = acc.types.get(request_type, 0) + 1
        if verdict == "throttle":
            acc.throttled += 1
        elif verdict == "block":
            acc.blocked += 1
        if ts < acc.first:
            acc.first = ts
        elif ts > acc.last:
            acc.last = ts
        if ts > self.max_ts:
            self.max_ts = ts

    def close(self, watermark: float | None = None) -> list[tuple[float, dict[str, IpWindow]]]:
        """Pop the windows that end at or before ``watermark`` (default: max event time - grace), oldest first."""
        watermark = self.max_ts - self.grace if watermark is None else watermark
        limit = math.floor(watermark / self.window)
        if limit <= self.closed_index:
            return []
        self.closed_index = limit
        closed = []
        for index in sorted(i for i in self.windows if i < limit):
            closed.append((index * self.window, self.windows.pop(index)))
            del self.first_offsets[index]
        return closed

    def commit_offset(self, position: int) -> int:
        """Where a new owner must start reading to rebuild the open windows."""
        return min(self.first_offsets.values(), default=position)

    def partials(self, source: int, closed: list[tuple[float, dict[str, IpWindow]]]):
        for start, ips in closed:
            for ip, acc in ips.items():
                yield ip, IpPartial(
                    ip=ip, window_start=start, source=source, requests=acc.requests, users=len(acc.users),
                    types=acc.types, throttled=acc.throttled, blocked=acc.blocked, first_seen=acc.first,
                    last_seen=acc.last,
                )


class WindowMerger:
    """Stage 2 state: partials per window and ``ip-features`` partition, and the sources' progress.

    ``now`` arguments are wall seconds (monotonic), used only to treat a silent source as idle.
    """

    def __init__(self, window: float, sources: int, idle: float, max_open: int) -> None:
        self.window, self.sources, self.idle, self.max_open = window, sources, idle, max_open
        self.windows: dict[float, dict[int, dict[str, IpWindow]]] = {}
        self.first_offsets: dict[float, dict[int, int]] = {}
        self.marks: dict[int, dict[int, tuple[float, float]]] = {}  # partition -> source -> (closed_until, heard)
        self.assigned: dict[int, float] = {}  # partition -> when assigned
        self.done_until = _NO_TIME
        self.late = 0

    def assign(self, partition: int, now: float) -> None:
        self.assigned[partition] = now
        self.marks[partition] = {}

    def revoke(self, partition: int) -> None:
        self.assigned.pop(partition, None)
        self.marks.pop(partition, None)
        for start in list(self.windows):
            self.windows[start].pop(partition, None)
            self.first_offsets[start].pop(partition, None)
            if not self.windows[start]:
                del self.windows[start], self.first_offsets[start]

    def add_partial(self, partition: int, offset: int, partial: IpPartial) -> None:
        start = partial.window_start
        if start + self.window <= self.done_until:
            self.late += 1
            return
        by_partition = self.windows.get(start)
        if by_partition is None:
            by_partition = self.windows[start] = {}
            self.first_offsets[start] = {}
        ips = by_partition.get(partition)
        if ips is None:
            ips = by_partition[partition] = {}
            self.first_offsets[start][partition] = offset
        acc = ips.get(partial.ip)
        if acc is None:
            acc = ips[partial.ip] = IpWindow(partial.first_seen, 0)
        acc.merge(partial)

    def add_mark(self, partition: int, mark: FeaturesWatermark, now: float) -> None:
        marks = self.marks.setdefault(partition, {})
        previous = marks.get(mark.source)
        marks[mark.source] = (max(mark.closed_until, previous[0] if previous else _NO_TIME), now)

    def _closed_on(self, partition: int, end: float, now: float) -> bool:
        marks = self.marks.get(partition, {})
        for source in range(self.sources):
            mark = marks.get(source)
            if mark is not None and mark[0] >= end:
                continue
            heard = mark[1] if mark is not None else self.assigned[partition]
            if now - heard <= self.idle:
                return False  # a live source has not closed this window yet
        return True

    def ready(self, now: float) -> list[tuple[float, dict[str, IpWindow]]]:
        """Pop the complete windows (oldest first) with their IPs merged over the assigned partitions."""
        out = []
        for start in sorted(self.windows):
            end = start + self.window
            forced = len(self.windows) > self.max_open
            if not forced and not (self.assigned and all(self._closed_on(p, end, now) for p in self.assigned)):
                break
            merged: dict[str, IpWindow] = {}
            for ips in self.windows.pop(start).values():
                merged.update(ips)
            del self.first_offsets[start]
            self.done_until = max(self.done_until, end)
            out.append((start, merged))
        return out

    def commit_offset(self, partition: int, position: int) -> int:
        firsts = [offsets[partition] for offsets in self.first_offsets.values() if partition in offsets]
        return min(firsts, default=position)


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
        self._tasks: list[asyncio.Future] = []

    async def on_start(self) -> None:
        partitions = await asyncio.to_thread(ensure_topics, self.settings)
        await self.ban_table.start(partitions[self.settings.blocklist_topic])
        for stage in self.stages:
            await stage.start(partitions)

    async def on_started(self) -> None:
        self._tasks = [asyncio.ensure_future(self.ban_table.run())]
        for stage in self.stages:
            task = asyncio.ensure_future(stage.run())
            task.add_done_callback(self._on_exit)
            self._tasks.append(task)

    def _on_exit(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("analytics crashed: %r", task.exception())
            asyncio.ensure_future(self.crash(task.exception()))

    async def on_stop(self) -> None:
        for stage in self.stages:
            stage.stop()
        runs = [t for t in self._tasks[1:] if not t.done()]
        if runs:
            await asyncio.wait(runs, timeout=30)
        if self._tasks:
            self._tasks[0].cancel()  # the blocklist reader follows its topic forever
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
