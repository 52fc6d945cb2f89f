"""What the console pages show that the gateway does not already hold: flags with their evidence, the
offence memory of automatic bans, and the limiter's consumer lag.

Flags and offences are read as ``GET /reports/abuse`` reads its reports: a short-lived consumer with
no group reads the tail of the topic (``ratewarden.gateway.routes.reports``), bounded in time
(:data:`READ_TIMEOUT`) and in readers at once; answers are cached for :data:`CACHE_SECONDS`, so a page
that polls does not open a Kafka connection each time. Anything that cannot be read in time is
shown as unknown, never a 500.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field

import msgspec
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from ratewarden.gateway.routes.reports import READERS, _close, _tail
from schemas.flags import AutoBan, IpFlag
from streams.kafka_config import aiokafka_options, resolve_bootstrap
from streams.kafka_io import make_consumer
from streams.settings import Settings

__all__ = ["CACHE_SECONDS", "FlaggedSubject", "SEVERITIES", "Sources", "group_flags", "select_flags"]

logger = logging.getLogger(__name__)

READ_TIMEOUT = 3.0
CACHE_SECONDS = 5.0
#: Records read back from the end of each partition of ip-flags and ban-offences.
DEPTH = 2_000
SEVERITIES = ("low", "medium", "high")
_TRANSIENT = (TimeoutError, KafkaError, OSError, RuntimeError)


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
        self._cache[name] = (time.monotonic(), value)
        return value

    async def _decoded(self, topic: str, kind: type) -> list | None:
        decode = msgspec.json.Decoder(kind).decode

        async def read() -> list:
            out = []
            for _, value in sorted(await _tail(self.settings, topic, DEPTH), key=lambda item: item[0]):
                try:
                    out.append(decode(value))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
            return out

        return await self._cached(topic, read)

    async def flags(self) -> list[IpFlag] | None:
        """The flags of the tail of ip-flags, oldest first; None if Kafka did not answer in time."""
        return await self._decoded(self.settings.ip_flags_topic, IpFlag)

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
            await _close(consumer)
            await asyncio.shield(admin.close())
        done = {tp: meta.offset for tp, meta in committed.items() if tp.topic == topic}
        return {"total": sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items()), "partitions": len(ends),
                "committed": len(done)}
