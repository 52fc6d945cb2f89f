"""What the console pages show that the gateway does not already hold: flags with their evidence, the
offence memory of automatic bans, and the limiter's consumer lag.

Flags and offences are read as ``GET /reports/abuse`` reads its reports: a short-lived consumer with
no group reads the tail of the topic (``ratewarden.gateway.routes.reports``), bounded in time
(:data:`READ_TIMEOUT`) and in readers at once; answers are cached for :data:`CACHE_SECONDS`, so a page
that polls does not open a Kafka connection each time. Anything that cannot be read in time is
shown as unknown, never a 500.

Nothing is dropped silently: progress markers (``FlagsWatermark`` on ``ip-flags``, ``FeaturesWatermark``
on ``ip-features``) are recognised and skipped, and any other record that does not decode is logged
and counted in ``ratewarden_console_undecodable_records_total{topic}`` (per read: a record still in the
tail is counted again by the next read).
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field

import msgspec
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from agents.ban_horizon import is_mark
from ratewarden.gateway.console.windows import WindowsRead, features_key, merge_windows
from ratewarden.gateway.routes.reports import READERS
from schemas.flags import AutoBan, FeaturesWatermark, IpFlag, IpPartial
from streams.kafka_config import aiokafka_options, resolve_bootstrap
from streams.kafka_io import make_consumer
from streams.settings import Settings
from streams.topic_tail import close_consumer, tail_records

__all__ = ["CACHE_SECONDS", "FEATURES_DEPTH", "FlaggedSubject", "SEVERITIES", "Sources", "UNDECODABLE", "decode_tail",
           "group_flags", "select_flags"]

logger = logging.getLogger(__name__)

READ_TIMEOUT = 3.0
CACHE_SECONDS = 5.0
#: Records read back from the end of each partition of ip-flags and ban-offences.
DEPTH = 2_000
#: Records read back from the end of the one ``ip-features`` partition of a subject. Each window puts
#: one partial per subject and source there, and every source marks every partition about once per
#: ``flush_interval``: with 4 sources and 500 subjects a partition, some 25 windows of 60 s.
FEATURES_DEPTH = 20_000
#: Subjects whose windows are cached at once (the oldest answers go first).
CACHED_SUBJECTS = 256
SEVERITIES = ("low", "medium", "high")
_TRANSIENT = (TimeoutError, KafkaError, OSError, RuntimeError)
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)

UNDECODABLE = Counter(
    "ratewarden_console_undecodable_records_total",
    "Records the console read from a topic that are neither a record it shows nor a progress marker (logged)",
    ["topic"],
)


def decode_tail(values, decode, topic: str, mark=None) -> tuple[list, int, int]:
    """``(records, markers, undecodable)`` of ``values`` (oldest first): markers (``mark(value)`` true, or a
    decoded :class:`FeaturesWatermark`) skipped; what does not decode logged and counted, never dropped silently."""
    out, markers, bad, first = [], 0, 0, None
    for value in values:
        if mark is not None and mark(value):
            markers += 1
            continue
        try:
            record = decode(value)
        except _DECODE_ERRORS as exc:
            bad += 1
            first = first or exc
            continue
        if isinstance(record, FeaturesWatermark):
            markers += 1
        else:
            out.append(record)
    if bad:
        UNDECODABLE.labels(topic).inc(bad)
        logger.warning("console: %d of %d records read from %s do not decode (first: %s)", bad, len(values), topic,
                       first)
    return out, markers, bad


@dataclass
class FlaggedSubject:
    """One address or network over the flags read: its strongest flag and every rule that fired."""

    subject: str
    kind: str
    score: float
    severity: str
    rules: list[str]
    last_window: float
    flags: list[IpFlag] = field(default_factory=list)  # newest window first

    @property
    def strongest(self) -> IpFlag:
        return max(self.flags, key=lambda f: f.score)


def select_flags(flags: list[IpFlag], rule: str | None = None, severity: str | None = None,
                 since: float | None = None, until: float | None = None) -> list[IpFlag]:
    """The flags with ``rule`` among their rules, of ``severity``, of windows starting in [since, until)."""
    return [f for f in flags if (not rule or rule in f.rules) and (not severity or f.severity == severity)
            and (since is None or f.window_start >= since) and (until is None or f.window_start < until)]


def group_flags(flags: list[IpFlag]) -> list[FlaggedSubject]:
    """One entry per subject, highest score first."""
    subjects: dict[str, FlaggedSubject] = {}
    for flag in sorted(flags, key=lambda f: -f.window_start):
        entry = subjects.get(flag.ip)
        if entry is None:
            entry = subjects[flag.ip] = FlaggedSubject(flag.ip, flag.kind, flag.score, flag.severity, [],
                                                       flag.window_start)
        entry.flags.append(flag)
        entry.score = max(entry.score, flag.score)
        if SEVERITIES.index(flag.severity) > SEVERITIES.index(entry.severity):
            entry.severity = flag.severity
        entry.rules.extend(r for r in flag.rules if r not in entry.rules)
    return sorted(subjects.values(), key=lambda s: (-s.score, s.subject))


class Sources:
    """Cached, bounded reads of the topics the console shows (one per gateway app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._readers = asyncio.Semaphore(READERS)
        self._cache: dict[str, tuple[float, object]] = {}

    async def _cached(self, name: str, read):
        hit = self._cache.get(name)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                async with self._readers:
                    value = await read()
        except _TRANSIENT as exc:
            logger.warning("console: reading %s failed: %r", name, exc)
            return None
        now = time.monotonic()
        if len(self._cache) >= CACHED_SUBJECTS:  # subjects' windows come and go: keep the newest answers
            for old in sorted(self._cache, key=lambda k: self._cache[k][0])[:len(self._cache) // 2]:
                del self._cache[old]
        self._cache[name] = (now, value)
        return value

    async def _decoded(self, topic: str, kind: type, mark=None) -> list | None:
        decode = msgspec.json.Decoder(kind).decode

        async def read() -> list:
            values = [value for _, value in await tail_records(self.settings, topic, DEPTH)]
            return decode_tail(values, decode, topic, mark)[0]

        return await self._cached(topic, read)

    async def flags(self) -> list[IpFlag] | None:
        """The flags of the tail of ip-flags, oldest first (progress markers skipped); None if Kafka did not
        answer in time."""
        return await self._decoded(self.settings.ip_flags_topic, IpFlag, is_mark)

    async def windows(self, subject: str, kind: str, flags: list[IpFlag] | None = None) -> WindowsRead | None:
        """The windows of ``subject`` in the tail (:data:`FEATURES_DEPTH`) of its one ``ip-features``
        partition, newest first, flagged ones with their rules; None if Kafka did not answer in time."""
        settings = self.settings
        key, topic = features_key(subject, kind, settings), settings.ip_features_topic
        decode = msgspec.json.Decoder(IpPartial | FeaturesWatermark).decode

        async def read() -> tuple[list[IpPartial], int, int, int]:
            values = [v for _, v in await tail_records(settings, topic, FEATURES_DEPTH, key)]
            partials, markers, bad = decode_tail(values, decode, topic)
            return [p for p in partials if key in (p.ip, p.network)], len(values), markers, bad

        got = await self._cached(f"{topic}:{key}", read)
        if got is None:
            return None
        partials, records, markers, bad = got
        rows = merge_windows(partials, subject, kind, settings.analytics_window, flags or ())
        return WindowsRead(rows, records, markers, bad, truncated=records >= FEATURES_DEPTH)

    async def offences(self) -> dict[str, AutoBan] | None:
        """The last automatic ban per subject (the ban agent's memory of repeat offences)."""
        bans = await self._decoded(self.settings.ban_offences_topic, AutoBan)
        return None if bans is None else {ban.subject: ban for ban in bans}

    async def lag(self) -> dict[str, int] | None:
        """Requests not yet read by the limiter group: ``{"total": n, "partitions": p}``; None if unknown."""
        return await self._cached("lag", self._lag)

    async def _lag(self) -> dict[str, int]:
        settings, topic = self.settings, self.settings.requests_topic
        admin = AIOKafkaAdminClient(bootstrap_servers=resolve_bootstrap(settings), **aiokafka_options(settings))
        consumer = make_consumer(settings, group_id=None)
        try:
            await admin.start()
            committed = await admin.list_consumer_group_offsets(settings.limiter_group)
            await consumer.start()
            first = TopicPartition(topic, 0)
            consumer.assign([first])
            await consumer.beginning_offsets([first])
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
            ends = await consumer.end_offsets(tps)
        finally:
            await close_consumer(consumer)
            await asyncio.shield(admin.close())
        done = {tp: meta.offset for tp, meta in committed.items() if tp.topic == topic}
        return {"total": sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items()), "partitions": len(ends),
                "committed": len(done)}
