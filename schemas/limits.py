"""Records of the compacted control topics: per-user rate limits and blocklist entries."""

from typing import Annotated, Literal

import msgspec

__all__ = ["ALGORITHMS", "Algorithm", "BURST_DESCRIPTION", "BlocklistEntry", "RateLimit"]

#: The rate-limiting algorithms, declared here once: the CLI, the HTTP API, the JSON Schema files
#: and the worker's settings derive their choices from this tuple, and the limiter loads the module
#: ``agents.strategies.<name>`` of each. Adding an algorithm is one name here and that one module.
ALGORITHMS = ("fixed", "sliding", "gcra")
Algorithm = Literal[ALGORITHMS]  # type: ignore[valid-type]  # a Literal of the tuple's values

BURST_DESCRIPTION = (
    "extra requests allowed at once, for algorithms with burst tolerance; others ignore it; "
    "none: the algorithm's default"
)


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
    burst: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000, description=BURST_DESCRIPTION)] | None = None


class BlocklistEntry(msgspec.Struct, frozen=True):
    """A blocked IP, network (a CIDR such as ``2001:db8:1:2::/64``) or user: from ``start`` (event
    time) for ``ttl`` seconds (``None``: forever)."""

    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    kind: Literal["ip", "network", "user"] = "ip"
    reason: str = "manual"
    start: float = 0.0
    ttl: float | None = None
