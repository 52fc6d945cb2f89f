"""Lookups the decision needs: which limits apply to a request, and whether it is blocklisted.

Both are plain in-memory structures fed by the compacted control topics (``rate-limits`` and
``blocklist``) through :mod:`streams.tables`; they do no I/O, so they are unit-tested directly.
"""

import logging
from typing import Iterable

from agents.network_bans import NetworkBans, normalize_cidr
from agents.strategies.base import Rule
from agents.strategies.registry import STRATEGIES
from schemas.limits import BlocklistEntry, RateLimit

__all__ = ["Blocklist", "LimitBook", "limit_key", "SEPARATOR"]

logger = logging.getLogger(__name__)

#: Joins user_id and request_type in keys; a control character cannot occur in either (intake rejects it).
SEPARATOR = "\x1f"


def limit_key(user_id: str, request_type: str | None = None) -> str:
    """The key of a limit (and of its counter) on the ``rate-limits`` topic and in state."""
    return user_id if request_type is None else f"{user_id}{SEPARATOR}{request_type}"


class LimitBook:
    """Per-user and per-(user, request_type) limits over a default; rules are cached per request shape."""

    def __init__(self, default_limit: int, default_window: float, default_algorithm: str = "fixed") -> None:
        self.default = RateLimit(user_id="*", limit=default_limit, window=default_window, algorithm=default_algorithm)
        self._limits: dict[str, RateLimit] = {}
        self._typed_users: dict[str, int] = {}  # user -> number of typed limits
        self._cache: dict[tuple[str, str], list[Rule]] = {}

    def __len__(self) -> int:
        return len(self._limits)

    def __iter__(self) -> Iterable[RateLimit]:
        return iter(list(self._limits.values()))

    def get(self, key: str) -> RateLimit | None:
        return self._limits.get(key)

    def put(self, key: str, limit: RateLimit | None) -> None:
        """Apply one record of the compacted topic; ``None`` is a tombstone."""
        old = self._limits.pop(key, None)
        if old is not None and old.request_type is not None:
            self._count_typed(old.user_id, -1)
        if limit is not None:
            self._limits[key] = limit
            if limit.request_type is not None:
                self._count_typed(limit.user_id, +1)
        self._cache.clear()
        logger.info("limit %s -> %s", key, limit)

    def _count_typed(self, user_id: str, delta: int) -> None:
        left = self._typed_users.get(user_id, 0) + delta
        if left > 0:
            self._typed_users[user_id] = left
        else:
            self._typed_users.pop(user_id, None)

    def rules_for(self, user_id: str, request_type: str) -> list[Rule]:
        """The rules a request must pass: the user's limit (or the default), then its typed limit."""
        shape = (user_id, request_type)
        rules = self._cache.get(shape)
        if rules is not None:
            return rules
        rules = [_rule(user_id, self._limits.get(user_id, self.default), "user")]
        if user_id in self._typed_users:
            typed_key = limit_key(user_id, request_type)
            typed = self._limits.get(typed_key)
            if typed is not None:
                rules.append(_rule(typed_key, typed, "type"))
        if len(self._cache) > 20_000:  # bounded: users come and go
            self._cache.clear()
        self._cache[shape] = rules
        return rules


def _rule(key: str, limit: RateLimit, scope: str) -> Rule:
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
