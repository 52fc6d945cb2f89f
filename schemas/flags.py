"""Records of the abuse analytics: per-IP window partials, flags with evidence, automatic bans, reports.

Flow: ``decisions`` -> per-partition partials (:class:`IpPartial`) and progress markers
(:class:`FeaturesWatermark`) on ``ip-features`` keyed by IP -> merged per-IP features
(:class:`IpFeatures`) -> :class:`IpFlag` on ``ip-flags`` -> :class:`AutoBan` on ``blocklist``;
one :class:`AbuseReport` per window on ``abuse-reports``. No logic here.
"""

import msgspec

from schemas.limits import BlocklistEntry

__all__ = [
    "AbuseReport", "AutoBan", "ReportShare", "FeaturesWatermark", "IpFeatures", "IpFlag", "IpPartial", "Population", "ReportedIp",
]


class IpPartial(msgspec.Struct, frozen=True, tag="partial"):
    """What one ``decisions`` partition (``source``) saw of one IP in one window of event time.

    A user's decisions all live in one ``decisions`` partition (they are keyed by user), so the
    distinct users of an IP over all sources is the sum of ``users``.
    """

    ip: str
    window_start: float
    source: int
    requests: int
    users: int
    types: dict[str, int]
    throttled: int
    blocked: int
    first_seen: float
    last_seen: float


class FeaturesWatermark(msgspec.Struct, frozen=True, tag="watermark"):
    """Source partition ``source`` has published every partial of the windows that end by ``closed_until``."""

    source: int
    closed_until: float


class IpFeatures(msgspec.Struct, frozen=True):
    """One IP in one window, merged over all sources: the columns the detectors read."""

    requests: int
    rate: float  # requests per second over the window
    users: int
    requests_per_user: float
    login_share: float
    top_type: str
    top_type_share: float
    throttled: int
    blocked: int
    refused_share: float  # (throttled + blocked) / requests
    first_seen: float
    last_seen: float


class Population(msgspec.Struct, frozen=True):
    """The robust statistics of the window's IPs that the z-scores are taken against."""

    ips: int
    median_requests: float
    mad_requests: float
    median_requests_per_user: float
    mad_requests_per_user: float


class IpFlag(msgspec.Struct, frozen=True):
    """A suspicious IP in one window, with its evidence. ``allowlisted`` flags are reported, never banned."""

    ip: str
    window_start: float
    window_end: float
    score: float
    rules: list[str]
    allowlisted: bool
    features: IpFeatures
    scores: dict[str, float]
    population: Population


class AutoBan(BlocklistEntry, frozen=True):
    """A blocklist entry written by the blocklist agent; the limiter reads it as a plain entry.

    ``offences`` counts the automatic bans of this IP so far (this one included); it sets the next
    TTL. A manual entry read through this type has ``offences == 0``.
    """

    offences: int = 0
    rules: list[str] = []
    window_end: float = 0.0
    score: float = 0.0


class ReportedIp(msgspec.Struct, frozen=True):
    ip: str
    score: float
    rules: list[str]
    requests: int
    users: int
    allowlisted: bool


class ReportShare(msgspec.Struct, frozen=True):
    """What one ``ip-features`` partition contributed to a report (an IP lives in one partition)."""

    partition: int
    ips: int
    requests: int
    refused: int


class AbuseReport(msgspec.Struct, frozen=True):
    """One window as the analytics shard that owns ``partitions`` of ``ip-features`` saw it.

    A window forced out before every source closed it names those sources in ``missing_sources``;
    partials that arrive later are merged and the window is reported again with ``revision`` + 1.
    ``shares`` split the counts by partition: the newest share per (window, partition) counts, so
    totals stay exact when partitions move between shards (``ratewarden.abuse_reports``).
    """

    window_start: float
    window_end: float
    partitions: list[int]
    ips: int
    requests: int
    refused: int
    flagged: list[ReportedIp]
    population: Population
    late_partials: int = 0  # partials merged after the window was first reported (counted in this revision)
    revision: int = 0
    missing_sources: list[int] = []
    shares: list[ReportShare] = []
