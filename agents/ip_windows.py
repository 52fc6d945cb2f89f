"""Per-IP window state of the analytics, as plain objects (no Kafka): what stage 1 folds and stage 2 merges.

:class:`WindowAggregator` folds one ``decisions`` partition into per-window per-IP partials;
:class:`WindowMerger` merges partials from every source partition and says when a window is
complete. Both hold only windows not yet closed, so memory is bounded by open windows, not by the
length of the stream (``tests/unit/test_detectors_state.py``).
"""

import math

from schemas.flags import FeaturesWatermark, IpPartial

__all__ = ["IpWindow", "WindowAggregator", "WindowMerger"]

_NO_TIME = 0.0  # "nothing closed yet": event times are seconds since the epoch, never below 0


class IpWindow:
    """One IP in one window: counts, request types, refusals, first and last event time.

    ``users`` is a set in stage 1 (distinct users of one source partition) and a count in stage 2
    (the sum over sources, which is exact: a user's decisions all live in one partition).
    """

    __slots__ = ("requests", "users", "types", "throttled", "blocked", "first", "last")

    def __init__(self, ts: float, users) -> None:
        self.requests = self.throttled = self.blocked = 0
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

    def add(self, ip: str, user: str, request_type: str, verdict: str, ts: float, offset: int) -> None:
        index = math.floor(ts / self.window)
        if index < self.closed_index:
            self.late += 1
            return
        ips = self.windows.get(index)
        if ips is None:
            ips = self.windows[index] = {}
            self.first_offsets[index] = offset
        acc = ips.get(ip)
        if acc is None:
            acc = ips[ip] = IpWindow(ts, set())
        acc.requests += 1
        acc.users.add(user)
        acc.types[request_type] = acc.types.get(request_type, 0) + 1
        if verdict == "throttle":
            acc.throttled += 1
        elif verdict == "block":
            acc.blocked += 1
        if ts < acc.first:
            acc.first = ts
        elif ts > acc.last:
            acc.last = ts
        if ts > self.max_ts:
            self.max_ts = ts

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


class WindowMerger:
    """Stage 2 state: partials per window and ``ip-features`` partition, and the sources' progress.

    ``now`` arguments are wall seconds (monotonic), used only to treat a silent source as idle.
    """

    def __init__(self, window: float, sources: int, idle: float, max_open: int) -> None:
        self.window, self.sources, self.idle, self.max_open = window, sources, idle, max_open
        self.windows: dict[float, dict[int, dict[str, IpWindow]]] = {}
        self.first_offsets: dict[float, dict[int, int]] = {}
        self.marks: dict[int, dict[int, tuple[float, float]]] = {}  # partition -> source -> (closed_until, heard)
        self.assigned: dict[int, float] = {}  # partition -> when assigned
        self.done_until = _NO_TIME
        self.late = 0

    def assign(self, partition: int, now: float) -> None:
        self.assigned[partition] = now
        self.marks[partition] = {}

    def revoke(self, partition: int) -> None:
        self.assigned.pop(partition, None)
        self.marks.pop(partition, None)
        for start in list(self.windows):
            self.windows[start].pop(partition, None)
            self.first_offsets[start].pop(partition, None)
            if not self.windows[start]:
                del self.windows[start], self.first_offsets[start]

    def add_partial(self, partition: int, offset: int, partial: IpPartial) -> None:
        start = partial.window_start
        if start + self.window <= self.done_until:
            self.late += 1
            return
        by_partition = self.windows.get(start)
        if by_partition is None:
            by_partition = self.windows[start] = {}
            self.first_offsets[start] = {}
        ips = by_partition.get(partition)
        if ips is None:
            ips = by_partition[partition] = {}
            self.first_offsets[start][partition] = offset
        acc = ips.get(partial.ip)
        if acc is None:
            acc = ips[partial.ip] = IpWindow(partial.first_seen, 0)
        acc.merge(partial)

    def add_mark(self, partition: int, mark: FeaturesWatermark, now: float) -> None:
        marks = self.marks.setdefault(partition, {})
        previous = marks.get(mark.source)
        marks[mark.source] = (max(mark.closed_until, previous[0] if previous else _NO_TIME), now)

    def _closed_on(self, partition: int, end: float, now: float) -> bool:
        marks = self.marks.get(partition, {})
        for source in range(self.sources):
            mark = marks.get(source)
            if mark is not None and mark[0] >= end:
                continue
            heard = mark[1] if mark is not None else self.assigned[partition]
            if now - heard <= self.idle:
                return False  # a live source has not closed this window yet
        return True

    def ready(self, now: float) -> list[tuple[float, dict[str, IpWindow]]]:
        """Pop the complete windows (oldest first) with their IPs merged over the assigned partitions."""
        out = []
        for start in sorted(self.windows):
            end = start + self.window
            forced = len(self.windows) > self.max_open
            if not forced and not (self.assigned and all(self._closed_on(p, end, now) for p in self.assigned)):
                break
            merged: dict[str, IpWindow] = {}
            for ips in self.windows.pop(start).values():
                merged.update(ips)
            del self.first_offsets[start]
            self.done_until = max(self.done_until, end)
            out.append((start, merged))
        return out

    def commit_offset(self, partition: int, position: int) -> int:
        firsts = [offsets[partition] for offsets in self.first_offsets.values() if partition in offsets]
        return min(firsts, default=position)
