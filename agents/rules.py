"""Lookups the decision needs: which limits apply to a request (its user's, its tier's or the default),
and whether it is blocklisted.

Both are plain in-memory structures fed by the compacted control topics (``rate-limits`` and
``blocklist``) through :mod:`streams.tables`; they do no I/O, so they are unit-tested directly.
"""

import logging
from typing import Iterable

from agents.network_bans import NetworkBans, normalize_cidr
from agents.strategies.base import Rule
from agents.strategies.registry import STRATEGIES
from schemas.limits import MEMBER_KEY_PREFIX, TIER_KEY_PREFIX, BlocklistEntry, RateLimit, TierLimit

__all__ = ["Blocklist", "LimitBook", "limit_key", "member_key", "tier_key", "SEPARATOR"]

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
    user's limit of that type, else its tier's limit of that type, if either exists. Counters stay
    the user's (keys ``user`` and ``user\x1ftype``) whichever limit applies: a tier is a limit each
    member gets, not a pool, and a user moving between tiers keeps its count.

    Rules are cached per request shape; any change (a limit, a tier's limit, a membership, or a
    tombstone of one) clears the whole cache, so it applies from the next batch. Without tiers the
    resolution is what it always was: the cache is the only per-event cost.
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

    def rules_for(self, user_id: str, request_type: str) -> list[Rule]:
        """The rules a request must pass: the user's limit (or its tier's, or the default), then a typed one."""
        shape = (user_id, request_type)
        rules = self._cache.get(shape)
        if rules is not None:
            return rules
        tier = self._members.get(user_id) if self._members else None
        own = self._limits.get(user_id)
        if own is None and tier is not None and (tiered := self._tiers.get(tier)) is not None:
            rules = [_rule(user_id, tiered, "tier")]
        else:
            rules = [_rule(user_id, self.default if own is None else own, "user")]
        if user_id in self._typed_users or tier in self._typed_tiers:
            typed_key = limit_key(user_id, request_type)
            typed = self._limits.get(typed_key)
            if typed is not None:
                rules.append(_rule(typed_key, typed, "type"))
            elif tier is not None and (tiered := self._tiers.get(limit_key(tier, request_type))) is not None:
                rules.append(_rule(typed_key, tiered, "tier_type"))
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


def _rule(key: str, limit: RateLimit | TierLimit, scope: str) -> Rule:
    """The rule of one limit; its state key carries the strategy's suffix (see ``Strategy.key_suffix``)."""
    suffix = STRATEGIES[limit.algorithm].key_suffix
    return Rule(key + suffix, limit.limit, limit.window, limit.algorithm, limit.shadow, scope, limit.burst)


class Blocklist:
    """Blocked IPs, networks (CIDRs) and users, each active from ``start`` for ``ttl`` seconds of event time.

    Entries are kept by the subject of their topic key (what :meth:`entries` lists and a tombstone
    names); network bans are also indexed by :class:`agents.network_bans.NetworkBans`, whose key is
    the normalised network, so two spellings of one network are one ban there: the one put last
    (the other takes over if that one is removed). A network entry whose subject is no CIDR is
    logged, counted in :attr:`rejected` and skipped: a bad record must not stop the worker."""

    def __init__(self) -> None:
        self._by_kind: dict[str, dict[str, BlocklistEntry]] = {"ip": {}, "network": {}, "user": {}}
        self._ips, self._networks, self._users = self._by_kind["ip"], self._by_kind["network"], self._by_kind["user"]
        self.network_index = NetworkBans()
        self._network_matches = self.network_index.matches
        self._network_names: dict[str, str] = {}  # subject -> normalised network
        self.rejected = 0

    def __len__(self) -> int:
        return sum(map(len, self._by_kind.values()))

    def entries(self) -> list[BlocklistEntry]:
        return [entry for entries in self._by_kind.values() for entry in entries.values()]

    def put(self, kind: str, subject: str, entry: BlocklistEntry | None) -> None:
        if kind == "network":
            self._put_network(subject, entry)
            return
        entries = self._by_kind.setdefault(kind, {})  # another kind is kept (and listed), never matched
        if entry is None:
            entries.pop(subject, None)
        else:
            entries[subject] = entry

    def _put_network(self, subject: str, entry: BlocklistEntry | None) -> None:
        if entry is None:
            self._networks.pop(subject, None)
            name = self._network_names.pop(subject, None)
            if name is not None:
                self.network_index.remove(name)
                for other, other_name in self._network_names.items():  # another spelling of the same network
                    if other_name == name:
                        self.network_index.put(other_name, self._networks[other])
            return
        try:
            name = self.network_index.put(subject, entry)
        except ValueError:
            self.rejected += 1
            logger.warning("blocklist: skipped network entry %r: not a CIDR (%d rejected)", subject, self.rejected)
            return
        self._networks[subject] = entry
        self._network_names[subject] = name

    def network_subjects(self, cidr: str) -> list[str]:
        """The subjects (as keyed on the topic) of the entries banning the network ``cidr``, any spelling."""
        name = normalize_cidr(cidr)
        return sorted(subject for subject, other in self._network_names.items() if other == name)

    def reason(self, user_id: str, ip: str, ts: float) -> str | None:
        """``ip_blocked`` / ``network_blocked`` / ``user_blocked`` when an entry is active at event time ``ts``.

        Runs once per event: lookups by subject (no key tuple), none while nothing is blocked; a
        network lookup is memoised per address (see :mod:`agents.network_bans`)."""
        if self._ips and (entry := self._ips.get(ip)) is not None and _active(entry, ts):
            return "ip_blocked"
        if self._networks:
            for entry in self._network_matches(ip):
                if _active(entry, ts):
                    return "network_blocked"
        if self._users and (entry := self._users.get(user_id)) is not None and _active(entry, ts):
            return "user_blocked"
        return None


def _active(entry: BlocklistEntry, ts: float) -> bool:
    return entry.start <= ts and (entry.ttl is None or ts < entry.start + entry.ttl)
