"""Flags -> blocklist entries with TTLs by event time; longer bans for repeat offenders.

:func:`next_ban` is the pure decision, against the IP's previous ban: the one still in the
blocklist (manual or automatic), else the last automatic one from the offence memory. An automatic
entry (:class:`schemas.flags.AutoBan`) carries the offence count; manual entries (CLI, gateway)
share the ``blocklist`` topic: a flag never shortens or replaces a ban that is still running.

The Faust agent (:func:`agents.ban_warden.register_blocklist_agent`) is low volume, one flag at a time: it reads the
blocklist into a :class:`BanBook` through a :class:`streams.tables.ControlTable` (also following the
entries written by other workers and by hand), decides, and writes the entry under key
``ip:<addr>`` to the blocklist and to the compacted ``ban-offences`` topic (the offence memory);
every limiter worker applies it from its next batch on. When event time passes a ban's end the
agent tombstones it, so the blocklist's live keys are the active bans (:mod:`agents.ban_warden`,
:mod:`agents.ban_expiry`).
"""

import logging
import math
from collections import deque
from typing import Callable

import msgspec

from schemas.flags import HORIZON_KEY_PREFIX, AutoBan, IpFlag
from schemas.limits import BlocklistEntry
from streams.settings_sections import BanSettings
from streams.tables import blocklist_key

__all__ = ["BanBook", "ban_end", "ban_ttl", "next_ban"]

logger = logging.getLogger(__name__)


def ban_end(entry: BlocklistEntry) -> float:
    """Event time the entry stops blocking; ``inf`` without a TTL."""
    return math.inf if entry.ttl is None else entry.start + entry.ttl


def ban_ttl(offences: int, settings: BanSettings) -> float:
    """The TTL of the ``offences``-th ban: ``ban_ttl * ban_ttl_factor ** (offences - 1)``, capped."""
    return min(settings.ban_ttl * settings.ban_ttl_factor ** (offences - 1), settings.ban_ttl_max)


def next_ban(previous: AutoBan | None, flag: IpFlag, settings: BanSettings, allowlisted: bool = False) -> AutoBan | None:
    """The entry to write for ``flag`` (starting at its window's end, plus ``ban_delay`` with
    ``ban_timing=event_time``: :mod:`agents.ban_gate`), or None.

    None when the subject is allow-listed, or when the flag's window starts before the end of the
    subject's current ban (manual or automatic): what it did while banned (e.g. hammering against the
    ban) is the same offence, and a flag of an earlier window never counts as a new one. Offences
    older than ``offence_memory`` are forgotten. Graded by severity: a low-severity flag with no
    offence in memory is only reported (``ban_low_severity="report"``, the default) or gets a short
    ban of ``ban_short_ttl`` (``"short"``); a repeat offence escalates whatever the severity.
    A network flag bans the network (a CIDR entry the limiter matches every address against).
    """
    if allowlisted or flag.allowlisted:
        return None
    at = flag.window_end + settings.ban_start_delay
    offences = 0
    if previous is not None:
        end = ban_end(previous)
        if flag.window_start < end:
            return None
        if at - end <= settings.offence_memory:
            offences = previous.offences
    first_low = flag.severity == "low" and offences == 0
    if first_low and settings.ban_low_severity == "report":
        return None
    offences += 1
    return AutoBan(
        subject=flag.ip,
        kind=flag.kind,
        reason="auto:" + "+".join(flag.rules),
        start=at,
        ttl=settings.ban_short_ttl if first_low else ban_ttl(offences, settings),
        offences=offences,
        rules=list(flag.rules),
        window_end=flag.window_end,
        score=flag.score,
        severity=flag.severity,
    )


class BanBook:
    """The entries of a compacted ban topic by key (``kind:subject``), plus this process's own writes
    (bans and tombstones) until they read back.

    A write is remembered until the topic returns it, so a flag that arrives in between sees the
    new entry, and an older record read back in the meantime does not roll it back. Every write of a
    key is remembered, in order, until the last of them is back: a ban and its tombstone written
    before either returns must not let the ban's read-back revive an entry the process already
    tombstoned (the expiry scan would then act on it again). The agent keeps
    two: the blocklist itself, and the offence memory (``ban-offences``: the last automatic ban per IP).
    """

    def __init__(self) -> None:
        self._entries: dict[str, AutoBan] = {}
        self._pending: dict[str, deque[bytes | None]] = {}  # own writes not yet read back, oldest first
        self._decode = msgspec.json.Decoder(AutoBan).decode
        #: Called after a record of someone else is applied (the ban agent re-checks expiry then).
        self.on_change: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, subject: str, kind: str = "ip") -> AutoBan | None:
        return self._entries.get(blocklist_key(kind, subject))

    def items(self) -> dict[str, AutoBan]:
        """Every entry by key (read-only view for the expiry scan)."""
        return self._entries

    def apply(self, key: bytes, value: bytes | None) -> None:
        """One record of the topic (``ControlTable`` callback); ``None`` is a tombstone. Ban horizons are not entries."""
        k = key.decode()
        if k.startswith(HORIZON_KEY_PREFIX):
            return
        pending = self._pending.get(k)
        if pending is not None:
            if value == pending[0]:  # our oldest outstanding write is back
                pending.popleft()
                if not pending:
                    del self._pending[k]
            return  # else a record the topic holds before our writes: they supersede it
        if value is None:
            self._entries.pop(k, None)
        else:
            self._entries[k] = self._decode(value)
        if self.on_change is not None:
            self.on_change()

    def wrote(self, entry: AutoBan, value: bytes) -> None:
        key = blocklist_key(entry.kind, entry.subject)
        self._entries[key] = entry
        self._pending.setdefault(key, deque()).append(value)

    def deleted(self, key: str) -> None:
        """This process sent a tombstone for ``key``."""
        self._entries.pop(key, None)
        self._pending.setdefault(key, deque()).append(None)
