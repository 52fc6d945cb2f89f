"""An address's or a network's analytics windows over time, merged from the partials on ``ip-features``.

``ip-flags`` carries only the windows in which a subject was flagged. Every window stage 1 closes is on
``ip-features`` instead, as one :class:`schemas.flags.IpPartial` per subject, window and *source* (the
``decisions`` partition that saw it), keyed by the subject's network when its address is aggregated
(an IPv6 /64 by default), else by the address: so an address's partials and its network's live in one
partition, and the console reads only that partition's tail (:func:`features_key`).

Merging the sources of one window is a sum, users included: decisions are keyed by user, so a user
lives in one source and the per-source distinct counts add up exactly (docs/analytics.md). A restarted
stage 1 can publish a partial again; the newest per (window, source) counts, so nothing is added twice.
Pure: no Kafka here (``sources.Sources.windows`` reads).
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from agents.account_features import network_of
from schemas.flags import IpFlag, IpPartial
from streams.settings import Settings

__all__ = ["SubjectWindow", "WindowsRead", "features_key", "merge_windows", "window_series"]

logger = logging.getLogger(__name__)


@dataclass
class SubjectWindow:
    """One window of one subject, summed over the sources that saw it; ``rules`` if it was flagged."""

    start: float
    end: float
    requests: int = 0
    users: int = 0
    logins: int = 0
    throttled: int = 0
    blocked: int = 0
    sources: list[int] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    score: float | None = None
    severity: str = ""

    @property
    def login_share(self) -> float | None:
        return self.logins / self.requests if self.requests else None

    @property
    def refused_share(self) -> float | None:
        """Throttled and blocked over requests: the limiter's verdicts, as the analytics count them."""
        return (self.throttled + self.blocked) / self.requests if self.requests else None


@dataclass
class WindowsRead:
    """What one read of ``ip-features`` gave for a subject: its windows, newest first, and what was read."""

    rows: list[SubjectWindow]
    records: int  # records read from the tail of the partition (markers and other subjects included)
    markers: int  # FeaturesWatermark records, skipped
    undecodable: int  # records that are neither a partial nor a marker (logged and counted)
    truncated: bool = False  # the read stopped at its depth: the oldest window may lack some sources' partials


def features_key(subject: str, kind: str, settings: Settings) -> str:
    """The ``ip-features`` key of a subject's partials: a network itself, an address's network when the
    analytics aggregate it (same settings as stage 1), else the address."""
    if kind == "network":
        return subject
    return network_of(subject, settings.network_v6_prefix, settings.network_v4_prefix) or subject


def merge_windows(partials: Iterable[IpPartial], subject: str, kind: str, window: float,
                  flags: Iterable[IpFlag] = ()) -> list[SubjectWindow]:
    """The windows of ``subject`` (of ``kind``: an address's own partials, or a network's), newest first,
    with the rules of ``flags`` of the same subject and window. Partials of other subjects are ignored."""
    latest: dict[tuple[float, int], IpPartial] = {}
    for partial in partials:
        if partial.ip == subject and partial.kind == kind:
            latest[(partial.window_start, partial.source)] = partial  # a re-published partial replaces
    rows: dict[float, SubjectWindow] = {}
    for (start, source), p in sorted(latest.items()):
        row = rows.get(start)
        if row is None:
            row = rows[start] = SubjectWindow(start, start + window)
        row.requests += p.requests
        row.users += p.users
        row.logins += p.types.get("login", 0)
        row.throttled += p.throttled
        row.blocked += p.blocked
        row.sources.append(source)
    for flag in flags:
        row = rows.get(flag.window_start)
        if flag.ip != subject or row is None:
            continue
        row.rules.extend(r for r in flag.rules if r not in row.rules)
        if row.score is None or flag.score > row.score:
            row.score, row.severity = flag.score, flag.severity
    return sorted(rows.values(), key=lambda r: -r.start)


def window_series(rows: list[SubjectWindow]) -> dict[str, list]:
    """The chart's columns, oldest window first: ``{"t": starts, "requests": [...], "users": [...]}``."""
    ordered = sorted(rows, key=lambda r: r.start)
    return {"t": [r.start for r in ordered], "requests": [r.requests for r in ordered],
            "users": [r.users for r in ordered]}
