"""Records of the compacted control topics: per-user rate limits, tiers of limits and blocklist entries.

The ``rate-limits`` topic holds four kinds of record, told apart by key (``agents.control_tables``):
a user's limit (``user`` or ``user\x1ftype``), a tier's limit (``tier:<name>`` or
``tier:<name>\x1ftype``), a user's membership of a tier (``member:<user>``) and a descriptor rules
document of the rate limit service (``domain:<name>``, ``schemas.descriptors``).
"""

import re
from typing import Annotated, Literal

import msgspec

__all__ = ["ALGORITHMS", "Algorithm", "BURST_DESCRIPTION", "BlocklistEntry", "MEMBER_KEY_PREFIX", "RateLimit",
           "TIER_KEY_PREFIX", "TIER_PATTERN", "TierLimit", "TierMembership", "TierName", "check_tier_name"]

#: The rate-limiting algorithms, declared here once: the CLI, the HTTP API, the JSON Schema files
#: and the worker's settings derive their choices from this tuple, and the limiter loads the module
#: ``agents.strategies.<name>`` of each. Adding an algorithm is one name here and that one module.
ALGORITHMS = ("fixed", "sliding", "gcra")
Algorithm = Literal[ALGORITHMS]  # type: ignore[valid-type]  # a Literal of the tuple's values

BURST_DESCRIPTION = (
    "extra requests allowed at once, for algorithms with burst tolerance; others ignore it; "
    "none: the algorithm's default"
)


#: Tier names: short, and safe in keys, paths (no "." or "..") and shells.
TIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
TierName = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=TIER_PATTERN)]
#: Key prefixes of tier records on the ``rate-limits`` topic; user ids with them cannot have own limits.
TIER_KEY_PREFIX, MEMBER_KEY_PREFIX = "tier:", "member:"

Limit = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
Window = Annotated[float, msgspec.Meta(ge=0.001, le=86_400, description="seconds, at least 1 ms")]
RequestType = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Burst = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000, description=BURST_DESCRIPTION)]


def check_tier_name(name: str) -> str:
    """``name`` if it is a valid tier name, else ValueError saying what is allowed."""
    if not re.fullmatch(TIER_PATTERN, name):
        raise ValueError(f"bad tier name {name!r}: 1 to 32 of A-Z a-z 0-9 _ . -, the first a letter or digit")
    return name


class RateLimit(msgspec.Struct, frozen=True):
    """A limit for one user, or for one (user, request_type) when ``request_type`` is set.

    Keyed on the ``rate-limits`` topic by ``user_id`` or ``user_id|request_type``; a null value
    (tombstone) removes it.
    """

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    limit: Limit
    window: Window = 60.0
    request_type: RequestType | None = None
    algorithm: Algorithm = "fixed"
    shadow: bool = False
    burst: Burst | None = None


class TierLimit(msgspec.Struct, frozen=True):
    """The limit every member of tier ``tier`` gets (each its own count: a tier is not a shared pool),
    or, with ``request_type``, their limit of that request type.

    Keyed ``tier:<tier>`` or ``tier:<tier>\x1f<request_type>``; a tombstone removes it. A member's own
    limit (``RateLimit``) wins over its tier's; the tier's wins over the default.
    """

    tier: TierName
    limit: Limit
    window: Window = 60.0
    request_type: RequestType | None = None
    algorithm: Algorithm = "fixed"
    shadow: bool = False
    burst: Burst | None = None


class TierMembership(msgspec.Struct, frozen=True):
    """User ``user_id`` belongs to tier ``tier``; keyed ``member:<user_id>``, a tombstone: no tier."""

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    tier: TierName


class BlocklistEntry(msgspec.Struct, frozen=True):
    """A blocked IP, network (a CIDR such as ``2001:db8:1:2::/64``) or user: from ``start`` (event
    time) for ``ttl`` seconds (``None``: forever)."""

    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    kind: Literal["ip", "network", "user"] = "ip"
    reason: str = "manual"
    start: float = 0.0
    ttl: float | None = None
