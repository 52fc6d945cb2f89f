"""Flags -> blocklist entries with TTLs by event time; longer bans for repeat offenders.

:func:`next_ban` is the pure decision. Its state is the blocklist itself: an automatic entry
(:class:`schemas.flags.AutoBan`) carries the offence count, so the compacted ``blocklist`` topic is
the only store, and manual entries (CLI, gateway) share it: a flag never shortens or replaces a ban
that is still running, manual or automatic.

The Faust agent (:func:`register_blocklist_agent`) is low volume, one flag at a time: it reads the
blocklist into a :class:`BanBook` through a :class:`streams.tables.ControlTable` (also following the
entries written by other workers and by hand), decides, and writes the entry back under key
``ip:<addr>``; every limiter worker applies it from its next batch on.
"""

import logging
import math

import faust
import msgspec

from agents.detectors import is_allowlisted, parse_networks
from schemas.flags import AutoBan, IpFlag
from streams.settings import Settings
from streams.tables import ControlTable, blocklist_key

__all__ = ["BanBook", "ban_end", "ban_ttl", "next_ban", "register_blocklist_agent"]

logger = logging.getLogger(__name__)


def ban_end(entry: AutoBan) -> float:
    return math.inf if entry.ttl is None else entry.start + entry.ttl


def ban_ttl(offences: int, settings: Settings) -> float:
    """The TTL of the ``offences``-th ban: ``ban_ttl * ban_ttl_factor ** (offences - 1)``, capped."""
    return min(settings.ban_ttl * settings.ban_ttl_factor ** (offences - 1), settings.ban_ttl_max)


def next_ban(previous: AutoBan | None, flag: IpFlag, settings: Settings, allowlisted: bool = False) -> AutoBan | None:
    """The entry to write for ``flag`` (starting at its window's end), or None.

    None when the IP is allow-listed, or when the flag's window starts before the end of the IP's
    current ban (manual or automatic): what it did while banned (e.g. hammering against the ban) is
    the same offence, and a flag of an earlier window never counts as a new one. Offences older than
    ``offence_memory`` are forgotten.
    """
    if allowlisted or flag.allowlisted:
        return None
    at = flag.window_end
    offences = 0
    if previous is not None:
        end = ban_end(previous)
        if flag.window_start < end:
            return None
        if at - end <= settings.offence_memory:
            offences = previous.offences
    offences += 1
    return AutoBan(
        subject=flag.ip,
        kind="ip",
        reason="auto:" + "+".join(flag.rules),
        start=at,
        ttl=ban_ttl(offences, settings),
        offences=offences,
        rules=list(flag.rules),
        window_end=flag.window_end,
        score=flag.score,
    )


class BanBook:
    """The IP entries of the blocklist topic, plus this process's own writes before they read back.

    A write is remembered until the topic returns it, so a flag that arrives in between sees the
    new entry, and an older record read back in the meantime does not roll it back.
    """

    def __init__(self) -> None:
        self._entries: dict[str, AutoBan] = {}
        self._pending: dict[str, bytes] = {}
        self._decode = msgspec.json.Decoder(AutoBan).decode

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ip: str) -> AutoBan | None:
        return self._entries.get(ip)

    def apply(self, key: bytes, value: bytes | None) -> None:
        """One record of the blocklist topic (``ControlTable`` callback)."""
        kind, _, subject = key.decode().partition(":")
        if kind != "ip":
            return
        pending = self._pending.get(subject)
        if pending is not None:
            if value == pending:
                del self._pending[subject]
            return
        if value is None:
            self._entries.pop(subject, None)
        else:
            self._entries[subject] = self._decode(value)

    def wrote(self, entry: AutoBan, value: bytes) -> None:
        self._entries[entry.subject] = entry
        self._pending[entry.subject] = value


def register_blocklist_agent(app: faust.App, settings: Settings, book: BanBook, table: ControlTable):
    """A Faust agent on ``ip-flags`` that writes automatic bans to the blocklist topic."""
    flags_topic = app.topic(
        settings.ip_flags_topic, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )
    blocklist_topic = app.topic(settings.blocklist_topic, key_serializer="raw", value_serializer="raw", partitions=1)
    decode, encode = msgspec.json.Decoder(IpFlag).decode, msgspec.json.Encoder().encode
    networks = parse_networks(settings.allowlist)

    @app.agent(flags_topic, name=f"{settings.app_id}-blocklist")
    async def blocklist_agent(stream):
        await table.ready.wait()
        async for value in stream:
            try:
                flag = decode(value)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                logger.warning("skipping a bad flag: %s", exc)
                continue
            entry = next_ban(book.get(flag.ip), flag, settings, is_allowlisted(flag.ip, networks))
            if entry is None:
                continue
            payload = encode(entry)
            book.wrote(entry, payload)
            await blocklist_topic.send(key=blocklist_key("ip", entry.subject).encode(), value=payload)
            logger.info("banned %s from %.3f for %gs (offence %d: %s)", entry.subject, entry.start, entry.ttl,
                        entry.offences, entry.reason)

    return blocklist_agent
