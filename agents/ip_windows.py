"""Per-IP window state of the analytics, as plain objects (no Kafka): what stage 1 folds and stage 2 merges.

:class:`WindowAggregator` folds one ``decisions`` partition into per-window per-IP partials;
:class:`agents.window_merger.WindowMerger` merges partials from every source partition. Both hold
only windows not yet closed, so memory is bounded by open windows, not by the length of the stream
(``tests/unit/test_detectors_state.py``). When a window closes, :class:`agents.account_features.WindowFeatures`
adds its account features and one window per aggregated network (an IPv6 /64 by default).
"""

import math
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple

from schemas.flags import IpPartial

if TYPE_CHECKING:
    from agents.account_features import WindowFeatures

__all__ = ["IpWindow", "WindowAggregator"]

_NO_TIME = 0.0  # "nothing closed yet": event times are seconds since the epoch, never below 0


class _Decided(NamedTuple):
    ip: str
    user_id: str
    request_type: str
    verdict: str
    ts_event: float
    status: int | None = None


class IpWindow:
    """One IP in one window: counts, request types, refusals, first and last event time.

    ``users`` is a set in stage 1 (distinct users of one source partition) and a count in stage 2
    (the sum over sources, which is exact: a user's decisions all live in one partition).
    The account fields are filled when the window closes (``agents.account_features``); a network's
    window has ``kind="network"``.
    """

    __slots__ = ("requests", "users", "types", "throttled", "blocked", "first", "last", "sources", "kind", "network",
                 "new_users", "accounts_known", "victim_users", "logins_known", "logins_failed", "server_errors")

    def __init__(self, ts: float, users, kind: str = "ip") -> None:
        self.requests = self.throttled = self.blocked = 0
        self.new_users = self.accounts_known = self.victim_users = self.logins_known = self.logins_failed = 0
        self.server_errors = 0
        self.sources = 0  # stage 2: a bit per source partition merged in (duplicates are recognised)
        self.users = users
        self.types: dict[str, int] = {}
        self.first = self.last = ts
        self.kind, self.network = kind, ""

    def merge(self, partial: IpPartial) -> None:
        self.requests += partial.requests
        self.users += partial.users
        for kind, n in partial.types.items():
            self.types[kind] = self.types.get(kind, 0) + n
        self.throttled += partial.throttled
        self.blocked += partial.blocked
        self.first = min(self.first, partial.first_seen)
        self.last = max(self.last, partial.last_seen)
        self.kind, self.network = partial.kind, partial.network
        self.new_users += partial.new_users
        self.accounts_known += partial.accounts_known
        self.victim_users += partial.victim_users
        self.logins_known += partial.logins_known
        self.logins_failed += partial.logins_failed
        self.server_errors += partial.server_errors

    def row(self, ip: str) -> dict:
        top_type, top_count = max(self.types.items(), key=lambda item: (item[1], item[0]), default=("", 0))
        return dict(
            ip=ip, requests=self.requests, users=self.users, logins=self.types.get("login", 0), top_type=top_type,
            top_count=top_count, throttled=self.throttled, blocked=self.blocked, first_seen=self.first,
            last_seen=self.last, kind=self.kind, network=self.network, new_users=self.new_users,
            accounts_known=self.accounts_known, victim_users=self.victim_users, logins_known=self.logins_known,
            logins_failed=self.logins_failed, server_errors=self.server_errors,
        )


class WindowAggregator:
    """Stage 1 state of one ``decisions`` partition: the open windows, by event time."""

    def __init__(self, window: float, grace: float, features: "WindowFeatures | None" = None) -> None:
        self.window, self.grace, self.features = window, grace, features
        self.windows: dict[int, dict[str, IpWindow]] = {}
        self.first_offsets: dict[int, int] = {}
        self.max_ts = _NO_TIME
        self.closed_index = -(2**62)  # windows below this index are closed
        self.late = 0

    @property
    def closed_until(self) -> float:
        """Every window ending at or before this event time has been closed."""
        return max(self.closed_index * self.window, _NO_TIME)

    def resume(self, closed_until: float) -> None:
        """Start where a previous owner stopped: windows ending by ``closed_until`` were published."""
        self.closed_index = max(self.closed_index, math.floor(closed_until / self.window))

    def add(self, ip: str, user: str, request_type: str, verdict: str, ts: float, offset: int,
            status: int | None = None) -> None:
        """Fold one decided request (see :meth:`add_all`)."""
        self.add_all(((offset, _Decided(ip, user, request_type, verdict, ts, status)),))

    def add_all(self, items: Iterable[tuple[int, Any]]) -> None:
        """Fold ``(offset, decision)`` pairs: anything with ``ip``, ``user_id``, ``request_type``,
        ``verdict``, ``ts_event`` and ``status``. One loop over locals: it runs once per decision of the stream."""
        window, closed, windows, firsts = self.window, self.closed_index, self.windows, self.first_offsets
        floor, max_ts, late = math.floor, self.max_ts, 0
        current, ips = None, None
        for offset, d in items:
            ts = d.ts_event
            index = floor(ts / window)
            if index != current:
                if index < closed:
                    late += 1
                    continue
                current, ips = index, windows.get(index)
                if ips is None:
                    ips = windows[index] = {}
                    firsts[index] = offset
            ip = d.ip
            acc = ips.get(ip)
            if acc is None:
                acc = ips[ip] = IpWindow(ts, set())
            acc.requests += 1
            acc.users.add(d.user_id)
            types, kind = acc.types, d.request_type
            types[kind] = types.get(kind, 0) + 1
            status = d.status
            if status is not None:
                if status >= 500:
                    acc.server_errors += 1
                elif kind == "login":
                    acc.logins_known += 1
                    if status >= 400:
                        acc.logins_failed += 1
            verdict = d.verdict
            if verdict == "throttle":
                acc.throttled += 1
            elif verdict == "block":
                acc.blocked += 1
            if ts < acc.first:
                acc.first = ts
            elif ts > acc.last:
                acc.last = ts
            if ts > max_ts:
                max_ts = ts
        self.max_ts, self.late = max_ts, self.late + late

    def close(self, watermark: float | None = None) -> list[tuple[float, dict[str, IpWindow]]]:
        """Pop the windows that end at or before ``watermark`` (default: max event time - grace), oldest first."""
        watermark = self.max_ts - self.grace if watermark is None else watermark
        limit = math.floor(watermark / self.window)
        if limit <= self.closed_index:
            return []
        self.closed_index = limit
        closed = []
        for index in sorted(i for i in self.windows if i < limit):
            start, ips = index * self.window, self.windows.pop(index)
            if self.features is not None:
                self.features.enrich(start + self.window, ips)
            closed.append((start, ips))
            del self.first_offsets[index]
        return closed

    def commit_offset(self, position: int) -> int:
        """Where a new owner must start reading to rebuild the open windows."""
        return min(self.first_offsets.values(), default=position)

    def partials(self, source: int, closed: list[tuple[float, dict[str, IpWindow]]]):
        """``(partition key, partial)`` of each subject: an address is keyed by its network when it has one,
        so a network and its addresses meet in one stage-2 partition."""
        for start, ips in closed:
            for ip, acc in ips.items():
                yield acc.network or ip, IpPartial(
                    ip=ip, window_start=start, source=source, requests=acc.requests, users=len(acc.users),
                    types=acc.types, throttled=acc.throttled, blocked=acc.blocked, first_seen=acc.first,
                    last_seen=acc.last, kind=acc.kind, network=acc.network, new_users=acc.new_users,
                    accounts_known=acc.accounts_known, victim_users=acc.victim_users, logins_known=acc.logins_known,
                    logins_failed=acc.logins_failed, server_errors=acc.server_errors,
                )
