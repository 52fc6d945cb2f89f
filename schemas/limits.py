"""Records of the compacted control topics: per-user rate limits and blocklist entries."""

from typing import Annotated, Literal

import msgspec

Algorithm = Literal["fixed", "sliding"]


class RateLimit(msgspec.Struct, frozen=True):
    """A limit for one user, or for one (user, request_type) when ``request_type`` is set.

    Keyed on the ``rate-limits`` topic by ``user_id`` or ``user_id|request_type``; a null value
    (tombstone) removes it.
    """

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    limit: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
    window: Annotated[float, msgspec.Meta(ge=0.001, le=86_400, description="seconds, at least 1 ms")] = 60.0
    request_type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    algorithm: Algorithm = "fixed"
    shadow: bool = False


class BlocklistEntry(msgspec.Struct, frozen=True):
    """A blocked IP or user: from ``start`` (event time) for ``ttl`` seconds (``None``: forever)."""

    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    kind: Literal["ip", "user"] = "ip"
    reason: str = "manual"
    start: float = 0.0
    ttl: float | None = None
