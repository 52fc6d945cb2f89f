"""The blocklist agent's state and I/O: bans from flags, tombstones for expired bans, offence memory.

One :class:`BanWarden` per worker. It holds the blocklist (a :class:`agents.blocklist.BanBook` the
analytics service fills through a ``ControlTable``), the offence memory (the compacted
``ban-offences`` topic, the last automatic ban per IP, read here into a second ``BanBook``) and the
event-time clock per ``ip-flags`` partition (:class:`agents.ban_expiry.BanClock`), fed by the flags
and by the ``abuse-reports`` topic (read outside any group, so every worker sees every window).

The offence count must outlive the blocklist entry: a ban is tombstoned when it ends, but a repeat
offence within ``offence_memory`` still gets the longer TTL. So every automatic ban is written to
both topics, and the previous ban a flag is judged against is the blocklist entry if there is one,
else the remembered one. A decision (flag -> ban) and an expiry pass (tombstones) hold one lock,
including their sends, so the topic sees them in the order they were decided.

Stage 2's progress markers (:class:`schemas.flags.FlagsWatermark`) arrive on ``ip-flags`` after the
flags they cover; once every source has marked a window, the agent writes the partition's
:class:`schemas.flags.BanHorizon` to ``blocklist`` after the bans it wrote for them
(:mod:`agents.ban_horizon`). A ban for a window a horizon already covered (a forced-out window
corrected later) is written all the same, counted and logged: a limiter waiting on horizons may have
decided past its start.

No ban for an allow-listed subject: the agent asks the live :class:`agents.allowlist.Allowlist` the
analytics service follows (the static seed plus the ``allowlist`` topic), at the moment it judges the flag.
"""

import asyncio
import logging

import faust
import msgspec

from agents.allowlist import Allowlist
from agents.ban_expiry import BanClock, expired, forgotten, owner
from agents.ban_horizon import FlagsProgress, horizon_key, is_mark
from agents.blocklist import BanBook, ban_end, next_ban
from schemas.flags import AutoBan, FlagsWatermark, IpFlag
from streams import metrics
from streams.settings import Settings
from streams.tables import ControlTable, blocklist_key

__all__ = ["BanWarden", "previous_ban", "register_blocklist_agent"]

logger = logging.getLogger(__name__)


class _ReportView(msgspec.Struct):
    """The fields of an :class:`schemas.flags.AbuseReport` that say how far event time has come."""

    window_start: float
    partitions: list[int]


def previous_ban(book: BanBook, memory: BanBook, subject: str, ended: dict[str, AutoBan] | None = None,
                 kind: str = "ip") -> AutoBan | None:
    """What a flag of ``subject`` (an address, or a network with ``kind="network"``) is judged against: its
    blocklist entry, else the entry this process tombstoned last (``ended``), else its last remembered automatic ban."""
    for found in (book.get(subject, kind), (ended or {}).get(blocklist_key(kind, subject)), memory.get(subject, kind)):
        if found is not None:
            return found
    return None


class BanWarden:
    def __init__(self, app: faust.App, settings: Settings, book: BanBook, allowlist: Allowlist | None = None) -> None:
        self.app, self.settings, self.book = app, settings, book
        self.allowlist = allowlist if allowlist is not None else Allowlist(settings.allowlist)  # live: no ban
        self.memory = BanBook()
        self.clock = BanClock()  # flags and reports: when bans end
        self.flags_clock = BanClock()  # flags alone: what the flags still to come can start before
        self.ended: dict[str, AutoBan] = {}  # tombstoned here, while a flag still to come may fall inside
        self.progress = FlagsProgress(settings.partitions)  # ip-features partitions: the sources of flags
        self.stats = {"flags": 0, "bad": 0, "bans": 0, "tombstones": 0, "forgotten": 0, "late_bans": 0, "horizons": 0}
        raw = dict(key_serializer="raw", value_serializer="raw", partitions=1, replicas=settings.replication_factor)
        self.blocklist_topic = app.topic(settings.blocklist_topic, **raw)
        self.memory_topic = app.topic(settings.ban_offences_topic, compacting=True, **raw)
        self.memory_table = ControlTable(settings, settings.ban_offences_topic, self.memory.apply)
        self.reports = ControlTable(settings, settings.abuse_reports_topic, self._on_report)
        self._decode_flag = msgspec.json.Decoder(IpFlag).decode
        self._decode_mark = msgspec.json.Decoder(FlagsWatermark).decode
        self._decode_report = msgspec.json.Decoder(_ReportView).decode
        self._encode = msgspec.json.Encoder().encode
        self._lock = asyncio.Lock()
        self._due = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        book.on_change = self.memory.on_change = self._due.set  # e.g. a manual ban already over

    async def start(self) -> None:
        """Create and read the offence memory, then follow it, the reports and the expiry timer."""
        await self.memory_topic.maybe_declare()
        await self.memory_table.start(1)
        await self.memory_table.catch_up()
        await self.reports.start(1)  # abuse-reports has one partition (streams.topics)
        self._tasks = [
            asyncio.ensure_future(self.memory_table.run()),
            asyncio.ensure_future(self.reports.run()),
            asyncio.ensure_future(self._expiry_loop()),
        ]
        logger.info("ban agent ready: %d blocklist entries, %d remembered offences", len(self.book), len(self.memory))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for table in (self.memory_table, self.reports):
            await table.stop()
        logger.info("ban agent stopped: %s", self.stats)

    def owned(self) -> set[int]:
        """The ``ip-flags`` partitions this worker consumes: it tombstones only their subjects."""
        topic = self.settings.ip_flags_topic
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    def _on_report(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        report = self._decode_report(value)
        for partition in report.partitions:
            if self.clock.advance(partition, report.window_start):
                self._due.set()

    async def on_flag(self, partition: int, value: bytes) -> None:
        """One record of ``ip-flags``: maybe a ban, the flag's window start moving the partition's time; or a
        progress marker, maybe a new horizon."""
        try:
            flag = self._decode_mark(value) if is_mark(value) else self._decode_flag(value)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.stats["bad"] += 1
            logger.warning("skipping a bad flag on partition %d: %s", partition, exc)
            return
        if type(flag) is FlagsWatermark:
            async with self._lock:  # after the bans of the flags it covers
                horizon = self.progress.advance(partition, flag)
                if horizon is not None:
                    await self.blocklist_topic.send(key=horizon_key(partition).encode(), value=self._encode(horizon))
                    self.stats["horizons"] += 1
            return
        self.stats["flags"] += 1
        async with self._lock:
            previous = previous_ban(self.book, self.memory, flag.ip, self.ended, flag.kind)
            entry = next_ban(previous, flag, self.settings.bans, self.allowlist.contains(flag.ip))
            if entry is not None:
                if self.progress.covers(partition, flag.window_end):
                    self.stats["late_bans"] += 1
                    metrics.LATE_BANS.inc()
                    logger.warning("ban of %s from window ending %.3f is late: ip-flags partition %d was complete to "
                                   "%.3f (a corrected window)", flag.ip, flag.window_end, partition,
                                   self.progress.published[partition])
                await self._ban(entry)
        # A ban may be decided after reports moved the time past its end (reports and flags are
        # read separately): check expiry after every ban as well as when time moves.
        moved = self.flags_clock.advance(partition, flag.window_start)
        if self.clock.advance(partition, flag.window_start) or moved or entry is not None:
            self._due.set()

    async def _ban(self, entry: AutoBan) -> None:
        key, payload = blocklist_key(entry.kind, entry.subject).encode(), self._encode(entry)
        self.book.wrote(entry, payload)
        self.memory.wrote(entry, payload)
        await self.blocklist_topic.send(key=key, value=payload)
        await self.memory_topic.send(key=key, value=payload)
        self.stats["bans"] += 1
        logger.info("banned %s from %.3f for %gs (offence %d: %s)", entry.subject, entry.start, entry.ttl,
                    entry.offences, entry.reason)

    async def _expiry_loop(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            async with self._lock:
                await self.expire()

    async def expire(self) -> None:
        """Tombstone the bans owned here that event time has passed, and forget old offences."""
        owned, n = self.owned(), self.settings.partitions
        for key in expired(self.book.items(), self.clock, n, owned):
            entry = self.book.items()[key]
            if entry.offences and self.memory.items().get(key) != entry:
                await self._remember(key, entry)  # e.g. a ban written before the memory existed
            self.book.deleted(key)
            self.ended[key] = entry
            await self.blocklist_topic.send(key=key.encode(), value=None)
            self.stats["tombstones"] += 1
            logger.info("ban of %s ended at %.3f: tombstoned (%s)", key, entry.start + entry.ttl, entry.reason)
        for key in [k for k, e in self.ended.items() if ban_end(e) <= self.flags_clock.at(owner(k, n))]:
            del self.ended[key]
        for key in forgotten(self.memory.items(), self.flags_clock, n, owned, self.settings.offence_memory):
            self.memory.deleted(key)
            await self.memory_topic.send(key=key.encode(), value=None)
            self.stats["forgotten"] += 1
            logger.info("offences of %s forgotten (older than %gs)", key, self.settings.offence_memory)

    async def _remember(self, key: str, entry: AutoBan) -> None:
        payload = self._encode(entry)
        self.memory.wrote(entry, payload)
        await self.memory_topic.send(key=key.encode(), value=payload)


def register_blocklist_agent(app: faust.App, settings: Settings, book: BanBook, table: ControlTable,
                             allowlist: Allowlist | None = None, allowlist_table: ControlTable | None = None):
    """A Faust agent on ``ip-flags`` that writes automatic bans to the blocklist topic and tombstones
    expired ones (:class:`BanWarden`); it starts once ``table`` (the blocklist) and ``allowlist_table``
    (the live ``allowlist``'s) have caught up."""
    flags_topic = app.topic(
        settings.ip_flags_topic, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )
    warden = BanWarden(app, settings, book, allowlist)

    @app.agent(flags_topic, name=f"{settings.app_id}-blocklist")
    async def blocklist_agent(stream):
        await table.ready.wait()
        if allowlist_table is not None:
            await allowlist_table.ready.wait()
        await warden.start()
        try:
            async for event in stream.events():
                await warden.on_flag(event.message.partition, event.value)
        finally:
            await warden.stop()

    return blocklist_agent
