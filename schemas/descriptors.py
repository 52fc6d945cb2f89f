"""Descriptor rate limits, as Envoy's rate limit service protocol and envoyproxy/ratelimit's rules define them.

Three records:

* :class:`RulesDocument`: one ``domain`` and its tree of :class:`DescriptorRule` — the rules file
  format of envoyproxy/ratelimit (``key``, optional ``value``, ``rate_limit``, ``descriptors``,
  ``unlimited``, ``shadow_mode``, ``replaces``) plus ratewarden's ``rate_limit.algorithm``. Published,
  validated, as JSON on the compacted limits topic under the key ``domain:<domain>``
  (``ratewarden limits load rules.yaml``); a tombstone removes the domain.
* :class:`DescriptorHit`: one descriptor of one ``ShouldRateLimit`` call, with the limit that
  matched it, published to the ``rls-hits`` topic keyed by its counter key, so one worker owns each
  counter (a per-IP or per-route limit is exact with several workers). The hit carries the limit it
  was checked against, so a replay of the topic reproduces every answer.
* :class:`DescriptorAnswer`: the counter's answer, written to ``rls-decisions`` (audit) and, for a
  hit stamped with reply headers (``schemas.replies``), to the caller's reply partition.

Counting follows the reference: every hit counts (``hits`` of them), also when over the limit; the
answer is ``OVER_LIMIT`` when the count after the hit exceeds ``limit``, with ``remaining`` 0.
``algorithm: gcra`` (ratewarden's) is the exception: a refused hit does not move the bucket.
"""

from typing import Annotated, Literal

import msgspec

__all__ = [
    "CODES", "DescriptorAnswer", "DescriptorHit", "DescriptorRule", "RateLimitSpec", "ReplaceSpec",
    "RulesDocument", "RULES_KEY_PREFIX", "UNIT_SECONDS",
]

#: Seconds per unit, as the reference counts them (a month is 30 days, a year 365), epoch-aligned.
UNIT_SECONDS = {
    "second": 1, "minute": 60, "hour": 3_600, "day": 86_400,
    "week": 604_800, "month": 2_592_000, "year": 31_536_000,
}
Unit = Literal["second", "minute", "hour", "day", "week", "month", "year"]
#: Algorithms a descriptor limit may use (the reference has only fixed windows).
DescriptorAlgorithm = Literal["fixed", "sliding", "gcra"]
CODES = ("OK", "OVER_LIMIT")
Code = Literal["OK", "OVER_LIMIT"]
#: Key prefix of a rules document on the limits topic: ``domain:<domain>``.
RULES_KEY_PREFIX = "domain:"


class RateLimitSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    unit: Unit
    requests_per_unit: Annotated[int, msgspec.Meta(ge=0, le=4_294_967_295)]
    name: str | None = None
    algorithm: DescriptorAlgorithm = "fixed"
    burst: Annotated[int, msgspec.Meta(ge=0, le=4_294_967_295)] | None = None  # gcra: extra requests at once


class ReplaceSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str


class DescriptorRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: str
    value: str | None = None
    rate_limit: RateLimitSpec | None = None
    descriptors: list["DescriptorRule"] = []
    unlimited: bool = False
    shadow_mode: bool = False
    replaces: list[ReplaceSpec] = []
    detailed_metric: bool = False  # the reference's per-value statistics; accepted, metrics are per rule here


class RulesDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    domain: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    descriptors: list[DescriptorRule] = []


class DescriptorHit(msgspec.Struct, frozen=True):
    """One descriptor of one call; ``request_id`` is the call's id and ``/`` and the descriptor's index."""

    request_id: str
    domain: str
    counter: str  # the counter key (also the record key): domain and every entry of the descriptor
    rule: str  # the matched rule's path, e.g. ``remote_address`` or ``user_id_u1.request_type``
    limit: int  # requests_per_unit
    window: float  # seconds per unit
    algorithm: str = "fixed"
    shadow: bool = False
    name: str | None = None
    hits: int = 1  # 0: check without counting (a descriptor's own hits_addend may be 0)
    ts: float = 0.0  # event time: the call's arrival at the service
    burst: int | None = None  # gcra only


class DescriptorAnswer(msgspec.Struct, frozen=True):
    request_id: str
    counter: str
    code: Code
    limit: int
    window: float
    count: int  # hits in the window, this one included (for ``sliding``: the weighted count, rounded up)
    remaining: int
    reset_after: float  # seconds until the window turns
    shadow: bool
    ts: float
    decided_at: float
