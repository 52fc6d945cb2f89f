"""Records of the abuse analytics: per-IP window partials, flags with evidence, automatic bans, reports.

A *subject* is an address or, where addresses are aggregated (an IPv6 /64 by default, optionally an
IPv4 /24), a network written as a CIDR; ``kind`` says which. The records keep the field name ``ip``
for the subject, so readers of older records see nothing change.

Flow: ``decisions`` -> per-partition partials (:class:`IpPartial`) and progress markers
(:class:`FeaturesWatermark`) on ``ip-features`` keyed by network (or address) -> merged per-subject features
(:class:`IpFeatures`) -> :class:`IpFlag` on ``ip-flags`` -> :class:`AutoBan` on ``blocklist``;
one :class:`AbuseReport` per window on ``abuse-reports``. Progress travels with the flags: stage 2
follows each window's flags with a :class:`FlagsWatermark` on every ``ip-flags`` partition, and the
blocklist agent turns them into a :class:`BanHorizon` on ``blocklist`` (key ``horizon:<partition>``),
after the bans they cover. No logic here.
"""

from typing import Literal

import msgspec

from schemas.limits import BlocklistEntry

SubjectKind = Literal["ip", "network"]
Severity = Literal["low", "medium", "high"]

__all__ = [
    "AbuseReport", "AutoBan", "BanHorizon", "FeaturesWatermark", "FlagsWatermark", "HORIZON_KEY_PREFIX", "IpFeatures",
    "IpFlag", "IpPartial", "Population", "ReportShare", "ReportedIp",
]

#: Key prefix of :class:`BanHorizon` records on the ``blocklist`` topic (``horizon:<ip-flags partition>``).
HORIZON_KEY_PREFIX = "horizon:"


class IpPartial(msgspec.Struct, frozen=True, tag="partial"):
    """What one ``decisions`` partition (``source``) saw of one IP in one window of event time.

    A user's decisions all live in one ``decisions`` partition (they are keyed by user), so the
    distinct users of an IP over all sources is the sum of ``users``; so are ``new_users`` (accounts
    never active before this window, among the ``accounts_known`` users whose source's account memory
    is warm) and ``victim_users`` (accounts tried from many networks in the window). ``network`` is the
    network an address belongs to when it is aggregated ("" if not); a network partial has
    ``kind="network"`` and its CIDR in ``ip``. ``logins_known``/``logins_failed``: logins whose event
    carried a status, and those that failed (4xx); ``server_errors``: requests the service answered 5xx.
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
    kind: SubjectKind = "ip"
    network: str = ""
    new_users: int = 0
    accounts_known: int = 0
    victim_users: int = 0
    logins_known: int = 0
    logins_failed: int = 0
    server_errors: int = 0


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
    addresses: int = 1  # a network: its addresses seen in the window
    top_address_share: float = 1.0  # a network: the busiest address's share of its requests
    new_users: int = 0  # accounts never active before this window
    new_user_share: float | None = None  # new_users / accounts whose history is known (None: memory not warm)
    victim_users: int = 0  # accounts tried from at least ``victim_min_networks`` networks in the window
    failure_share: float | None = None  # failed logins / logins with a status (None: no status given)
    error_share: float = 0.0  # requests the service answered 5xx: a client retrying a failing service
    crowd_factor: float = 1.0  # the window's median requests per IP over its recent baseline


class Population(msgspec.Struct, frozen=True):
    """The robust statistics of the window's IPs that the z-scores are taken against."""

    ips: int
    median_requests: float
    mad_requests: float
    median_requests_per_user: float
    mad_requests_per_user: float


class IpFlag(msgspec.Struct, frozen=True):
    """A suspicious IP or network (``kind``) in one window, with its evidence. ``allowlisted`` flags are
    reported, never banned; ``severity`` (low, medium, high) grades the response (``agents.blocklist``)."""

    ip: str
    window_start: float
    window_end: float
    score: float
    rules: list[str]
    allowlisted: bool
    features: IpFeatures
    scores: dict[str, float]
    population: Population
    kind: SubjectKind = "ip"
    severity: Severity = "high"


class FlagsWatermark(msgspec.Struct, frozen=True, tag="flags_watermark"):
    """On an ``ip-flags`` partition: stage 2 has published every flag of the windows of ``ip-features``
    partition ``source`` that end by ``closed_until`` (every decisions partition had closed them)."""

    source: int
    closed_until: float


class BanHorizon(msgspec.Struct, frozen=True):
    """On ``blocklist``, after the bans it covers: every ban from the flags of ``ip-flags`` partition
    ``partition`` of windows ending by ``closed_until`` has been written."""

    partition: int
    closed_until: float


class AutoBan(BlocklistEntry, frozen=True):
    """A blocklist entry written by the blocklist agent; the limiter reads it as a plain entry.

    ``offences`` counts the automatic bans of this IP so far (this one included); it sets the next
    TTL. A manual entry read through this type has ``offences == 0``.
    """

    offences: int = 0
    rules: list[str] = []
    window_end: float = 0.0
    score: float = 0.0
    severity: Severity = "high"


class ReportedIp(msgspec.Struct, frozen=True):
    ip: str
    score: float
    rules: list[str]
    requests: int
    users: int
    allowlisted: bool
    kind: SubjectKind = "ip"
    severity: Severity = "high"


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
