"""The lookup the decision needs first: which limits apply to a request (its user's, its tier's, the
``ratewarden`` rules' or the default); whether it is blocklisted is :mod:`agents.blocklist_entries`.

A plain in-memory structure fed by the compacted ``rate-limits`` topic through :mod:`streams.tables`;
it does no I/O, so it is unit-tested directly.
"""

import logging
from typing import Iterable

from agents.descriptor_rules import MatchedLimit
from agents.event_rules import EVENTS_DOMAIN, EventRules
from agents.strategies.base import Rule
from agents.strategies.registry import STRATEGIES
from schemas.descriptors import RulesDocument
from schemas.limits import MEMBER_KEY_PREFIX, TIER_KEY_PREFIX, RateLimit, TierLimit

__all__ = ["LimitBook", "limit_key", "member_key", "tier_key", "SEPARATOR"]

logger = logging.getLogger(__name__)

#: Joins user_id and request_type in keys; a control character cannot occur in either (intake rejects it).
SEPARATOR = "\x1f"


def limit_key(user_id: str, request_type: str | None = None) -> str:
    """The key of a limit (and of its counter) on the ``rate-limits`` topic and in state."""
    return user_id if request_type is None else f"{user_id}{SEPARATOR}{request_type}"


def tier_key(tier: str, request_type: str | None = None) -> str:
    """The ``rate-limits`` key of a tier's limit (of one request type, if given)."""
    return TIER_KEY_PREFIX + limit_key(tier, request_type)


def member_key(user_id: str) -> str:
    """The ``rate-limits`` key of a user's membership of a tier."""
    return MEMBER_KEY_PREFIX + user_id


class LimitBook:
    """Limits per user, per tier and per (user or tier, request_type) over a default.

    A request (user, type) gets the user's own limit, else its tier's, else the default; then the
    user's limit of that type, else its tier's limit of that type, if either exists. The rules
    document of the ``ratewarden`` domain (:mod:`agents.event_rules`) slots its rules into that
    order: its rule for the user's id after the user's record, its key-only rule before the default.
    Counters stay the user's (keys ``user`` and ``user\x1ftype``) whichever limit applies: a tier is a
    limit each member gets, not a pool, and a user moving between tiers keeps its count.

    Rules are cached per request shape; any change (a limit, a tier's limit, a membership, the
    document, or a tombstone of one) clears the whole cache, so it applies from the next batch. The
    cache is the only per-event cost, with or without tiers and a document.
    """

    def __init__(self, default_limit: int, default_window: float, default_algorithm: str = "fixed") -> None:
        self.default = RateLimit(user_id="*", limit=default_limit, window=default_window, algorithm=default_algorithm)
        self._limits: dict[str, RateLimit] = {}
        self._typed_users: dict[str, int] = {}  # user -> number of typed limits
        self._tiers: dict[str, TierLimit] = {}  # limit_key(tier, type) -> the tier's limit
        self._typed_tiers: dict[str, int] = {}  # tier -> number of typed limits
        self._members: dict[str, str] = {}  # user -> tier
        self._member_counts: dict[str, int] = {}  # tier -> members
        self._cache: dict[tuple[str, str], list[Rule]] = {}
        self.rules = EventRules()  # the ratewarden domain's rules document

    def __len__(self) -> int:
        return len(self._limits)

    def __iter__(self) -> Iterable[RateLimit]:
        """The users' own limits (tiers: :meth:`tiers`)."""
        return iter(list(self._limits.values()))

    def get(self, key: str) -> RateLimit | None:
        return self._limits.get(key)

    def put(self, key: str, limit: RateLimit | None) -> None:
        """Apply one record of the compacted topic; ``None`` is a tombstone."""
        _replace(self._limits, self._typed_users, key, limit, "user_id")
        self._cache.clear()
        logger.info("limit %s -> %s", key, limit)

    def put_tier(self, key: str, limit: TierLimit | None) -> None:
        """Apply a tier's limit; ``key`` is ``limit_key(tier, request_type)`` (the topic key without its prefix)."""
        _replace(self._tiers, self._typed_tiers, key, limit, "tier")
        self._cache.clear()
        logger.info("tier limit %s -> %s", key, limit)

    def put_member(self, user_id: str, tier: str | None) -> None:
        """Apply a membership: ``user_id`` belongs to ``tier`` (``None``: to no tier)."""
        old = self._members.pop(user_id, None)
        if old is not None:
            _count(self._member_counts, old, -1)
        if tier is not None:
            self._members[user_id] = tier
            _count(self._member_counts, tier, +1)
        self._cache.clear()
        logger.debug("member %s -> tier %s", user_id, tier)  # many at start-up: one line each would flood the log

    def tier_of(self, user_id: str) -> str | None:
        return self._members.get(user_id)

    def get_tier(self, tier: str, request_type: str | None = None) -> TierLimit | None:
        return self._tiers.get(limit_key(tier, request_type))

    def tiers(self) -> dict[str, list[TierLimit]]:
        """Every tier with limits or members: its limits, the untyped one first, then by type."""
        found: dict[str, list[TierLimit]] = {name: [] for name in self._member_counts}
        for limit in sorted(self._tiers.values(), key=lambda x: (x.tier, x.request_type or "")):
            found.setdefault(limit.tier, []).append(limit)
        return dict(sorted(found.items()))

    def members(self, tier: str) -> int:
        return self._member_counts.get(tier, 0)

    def put_document(self, document: RulesDocument | None) -> None:
        """Apply the rules document of the ``ratewarden`` domain (``agents.event_rules``); None removes it."""
        self.rules.put(document)
        self._cache.clear()
        logger.info("rules of the %s domain %s", EVENTS_DOMAIN, "removed" if document is None else "loaded")

    def has_own(self, user_id: str) -> bool:
        """The user has a limit of its own: a record, or a document rule for its id (not the key-only one)."""
        if user_id in self._limits:
            return True
        document = self.rules.user(user_id)
        return document.by_value and document.limit is not None

    def rules_for(self, user_id: str, request_type: str) -> list[Rule]:
        """The rules a request must pass: its user limit, then a typed one (the order in ``agents.event_rules``)."""
        shape = (user_id, request_type)
        rules = self._cache.get(shape)
        if rules is not None:
            return rules
        tier = self._members.get(user_id) if self._members else None
        document = self.rules.user(user_id)
        own = self._limits.get(user_id)
        if own is not None:
            rules = [_rule(user_id, own, "user")]
        elif document.by_value and document.limit is not None:
            rules = [_rule(user_id, document.limit, "user")]
        elif tier is not None and (tiered := self._tiers.get(tier)) is not None:
            rules = [_rule(user_id, tiered, "tier")]
        elif document.limit is not None:
            rules = [_rule(user_id, document.limit, "user")]
        else:
            rules = [_rule(user_id, self.default, "user")]
        typed_key = limit_key(user_id, request_type)
        typed = self._limits.get(typed_key) if user_id in self._typed_users else None
        in_document = self.rules.typed(document, request_type)
        if typed is not None:
            rules.append(_rule(typed_key, typed, "type"))
        elif in_document is not None and document.by_value:
            rules.append(_rule(typed_key, in_document, "type"))
        elif tier in self._typed_tiers and (tiered := self._tiers.get(limit_key(tier, request_type))) is not None:
            rules.append(_rule(typed_key, tiered, "tier_type"))
        elif in_document is not None:
            rules.append(_rule(typed_key, in_document, "type"))
        if len(self._cache) > 20_000:  # bounded: users come and go
            self._cache.clear()
        self._cache[shape] = rules
        return rules


def _replace(limits: dict, typed: dict[str, int], key: str, limit: RateLimit | TierLimit | None, owner: str) -> None:
    """Put ``limit`` (None: remove) under ``key``, counting typed limits per owner (its ``owner`` field)."""
    old = limits.pop(key, None)
    if old is not None and old.request_type is not None:
        _count(typed, getattr(old, owner), -1)
    if limit is not None:
        limits[key] = limit
        if limit.request_type is not None:
            _count(typed, getattr(limit, owner), +1)


def _count(counts: dict[str, int], name: str, delta: int) -> None:
    left = counts.get(name, 0) + delta
    if left > 0:
        counts[name] = left
    else:
        counts.pop(name, None)


def _rule(key: str, limit: RateLimit | TierLimit | MatchedLimit, scope: str) -> Rule:
    """The rule of one limit (a record's, a tier's or a document's); its state key carries the strategy's
    suffix (see ``Strategy.key_suffix``)."""
    suffix = STRATEGIES[limit.algorithm].key_suffix
    quota = limit.requests_per_unit if type(limit) is MatchedLimit else limit.limit
    return Rule(key + suffix, quota, limit.window, limit.algorithm, limit.shadow, scope, limit.burst)
