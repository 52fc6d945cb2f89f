"""What every rate-limiting algorithm provides: the :class:`Strategy` protocol, and the rule and check
records it works on.

A strategy is pure. It owns its state type (one value per limit key: a window counter, a theoretical
arrival time, ...), and answers four questions about it: the state as seen at event time ``ts``
(:meth:`Strategy.advance`), whether one more request fits (:meth:`Strategy.check`), the state once
that request is counted (:meth:`Strategy.record`), and when the state is no longer needed
(:meth:`Strategy.expired`). It also writes the state as bytes for RocksDB and the changelog
(:meth:`Strategy.encode_state`, :meth:`Strategy.decode_state`); ``agents.state_codec`` puts a tag
byte (``state_id`` and ``state_version``) in front so a reader knows whose payload follows.

:func:`agents.policy.decide` combines the checks of every rule that applies to a request.
"""

import math
from typing import Any, NamedTuple, Protocol

__all__ = ["ADDRESS_REASON", "EPS", "THROTTLE_REASONS", "Check", "Rule", "Strategy", "ceil_ms"]

#: Slack for comparisons of (fractional) counts with limits.
EPS = 1e-9

#: The decision's reason when a rule of this scope throttles: the user's own (or the default) limit,
#: its tier's limit (``agents.rules.LimitBook``), the typed limit of the user or of its tier, or the
#: client address's limit (``agents.event_rules``; counted by the gateway, ``schemas.refusals``).
THROTTLE_REASONS = {"user": "rate_limited", "type": "rate_limited_type",
                    "tier": "rate_limited_tier", "tier_type": "rate_limited_tier_type",
                    "address": "rate_limited_address"}
#: The reason of a request refused by its client address's limit (``agents.policy.decide_refused``).
ADDRESS_REASON = THROTTLE_REASONS["address"]


class Rule(NamedTuple):
    """One limit that applies to a request; ``key`` names the state it uses."""

    key: str
    limit: int
    window: float
    algorithm: str = "fixed"
    shadow: bool = False
    scope: str = "user"  # which limit this is, for the decision's reason: a key of THROTTLE_REASONS
    burst: int | None = None  # extra requests allowed at once (algorithms with burst tolerance)


class Check(NamedTuple):
    """One rule's verdict on one request, before counting it.

    ``used`` of ``capacity`` requests are counted against the rule before this one (fractional for
    the sliding window); the decision reports ``remaining = capacity - ceil(used)`` after it.
    ``reset_at`` is when the rule's count is back to zero if the request is counted when allowed;
    ``retry_after`` is rounded up to the millisecond at which a request would be allowed.
    """

    allowed: bool
    used: float
    capacity: int
    window_start: float
    reset_at: float
    retry_after: float


class Strategy(Protocol):
    """A rate-limiting algorithm, registered under ``name`` (one of ``schemas.limits.ALGORITHMS``).

    ``state_type`` is the class of its state values; strategies that share a state type (fixed and
    sliding share the window counter) share ``state_id``, the codec and ``key_suffix``, so switching a
    limit between them keeps its count. ``key_suffix`` is appended to the limit key to name the state,
    so a strategy never receives another state type's value. ``state_id`` (1-15) and
    ``state_version`` (0-15) make the tag byte of the stored value; :meth:`decode_state` reads every
    version it ever wrote (version 0 is the untagged format written before tags existed, if any).
    """

    name: str
    state_type: type
    state_id: int
    state_version: int
    key_suffix: str

    def advance(self, state: Any, rule: Rule, ts: float) -> Any:
        """The state as seen by a request at ``ts`` (``state`` itself when unchanged; fresh for None)."""

    def check(self, state: Any, rule: Rule, ts: float) -> Check:
        """Would one more request at ``ts`` be allowed, given the advanced ``state``?"""

    def record(self, state: Any, rule: Rule, ts: float) -> Any:
        """The advanced ``state`` once an allowed request at ``ts`` is counted."""

    def expired(self, state: Any, watermark: float) -> bool:
        """True when no event near ``watermark`` (event time) needs ``state`` any more."""

    def encode_state(self, state: Any) -> bytes:
        """The payload of ``state`` in the current version (never 31 bytes: see agents.state_codec)."""

    def decode_state(self, payload: bytes, version: int) -> Any:
        """A state from a payload written in ``version``."""


def ceil_ms(seconds: float) -> float:
    """``seconds`` rounded up to the millisecond (a hair of float noise is not a millisecond more)."""
    return math.ceil(seconds * 1000.0 - 1e-6) / 1000.0
