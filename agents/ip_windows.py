"""Per-IP window state of the analytics, as plain objects (no Kafka): what stage 1 folds and stage 2 merges.

:class:`WindowAggregator` folds one ``decisions`` partition into per-window per-IP partials;
:class:`agents.window_merger.WindowMerger` merges partials from every source partition. Both hold
only windows not yet closed, so memory is bounded by open windows, not by the length of the stream
(``tests/unit/test_detectors_state.py``).
"""

import math
from typing import Any, Iterable, NamedTuple

from schemas.flags import IpPartial

__all__ = ["IpWindow", "WindowAggregator"]

_NO_TIME = 0.0  # "nothing closed yet": event times are seconds since the epoch, never below 0


class _Decided(NamedTuple):
    ip: str
    user_id: str
    request_type: str
    verdict: str
    ts_event: float


class IpWindow:
    """One IP in one window: counts, request types, refusals, first and last event time.

    ``users`` is a set in stage 1 (distinct users of one source partition) and a count in stage 2
    (the sum over sources, which is exact: a user's decisions all live in one partition).
    """

    __slots__ = ("requests", "users", "types", "throttled", "blocked", "first", "last", "sources")

    def __init__(self, ts: float, users) -> None:
        self.requests = self.throttled = self.blocked = 0
        self.sources = 0  # stage 2: a bit per source partition merged in (duplicates are recognised)
        self.users = users
        self.types: dict[str, int] = {}
        self.first = self.last = ts

    def merge(self, partial: IpPartial) -> None:
        self.requests += partial.requests
        self.users += partial.users
        for kind, n in partial.types.items():
            self.types[kind] = self.types.get(kind, 0) + n
        self.throttled += partial.throttled
        self.blocked += partial.blocked
        self.first = min(self.first, partial.first_seen)
        self.last = max(self.last, partial.last_seen)

    def row(self, ip: str) -> dict:
        top_type, top_count = max(self.types.items(), key=lambda item: (item[1], item[0]), default=("", 0))
        return dict(
            ip=ip, requests=self.requests, users=self.users, logins=self.types.get("login", 0), top_type=top_type,
            top_count=top_count, throttled=self.throttled, blocked=self.blocked, first_seen=self.first,
            last_seen=self.last,
        )


class WindowAggregator:
    """Stage 1 state of one ``decisions`` partition: the open windows, by event time."""

    def __init__(self, window: float, grace: float) -> None:
        self.window, self.grace = window, grace
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

    def add(self, ip: str, user: str, request_type: str, verdict: str, ts: float, offset: int) -> None:
        """Fold one decided request (see :meth:`add_all`)."""
        self.add_all(((offset, _Decided(ip, user, request_type, verdict, ts)),))

    def add_all(self, items: Iterable[tuple[int, Any]]) -> None:
        """Fold ``(offset, decision)`` pairs: anything with ``ip``, ``user_id``, ``request_type``,
        ``verdict`` and ``ts_event``. One loop over locals: it runs once per decision of the stream."""
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
            closed.append((index * self.window, self.windows.pop(index)))
            del self.first_offsets[index]
        return closed

    def commit_offset(self, position: int) -> int:
        """Where a new owner must start reading to rebuild the open windows."""
        return min(self.first_offsets.values(), default=position)

    def partials(self, source: int, closed: list[tuple[float, dict[str, IpWindow]]]):
        for start, ips in closed:
            for ip, acc in ips.items():
                yield ip, IpPartial(
                    ip=ip, window_start=start, source=source, requests=acc.requests, users=len(acc.users),
                    types=acc.types, throttled=acc.throttled, blocked=acc.blocked, first_seen=acc.first,
                    last_seen=acc.last,
                )
