"""Stage 2 of the analytics, pure: merge per-source partials and close windows by event time.

A window of one ``ip-features`` partition is complete when every source (``decisions`` partition)
has marked it closed (a :class:`FeaturesWatermark` past its end: each source publishes its partials
before its marks, in partition order). The only other way a window closes is a **bounded wait**: a
source that has not been heard for ``idle`` wall seconds is taken as idle or gone, and the window is
*forced* out without it. A count of open windows never closes anything: after a restart the
sources catch up on a backlog one partition after another, and closing by count there reported
windows with only some sources in them.

A forced window is kept (at most ``keep`` of them) until every source has covered it, so a partial
that arrives later is merged and the window is reported again with ``revision + 1``: a correction,
not a loss. Duplicates (a stage 1 that restarted re-publishes partials) are recognised exactly: each
merged IP remembers which sources it has, and a window every source had covered takes nothing more.
What cannot be corrected (its window was evicted from ``keep``) is counted as ``dropped``.

The stage commits :meth:`WindowMerger.progress` with its offsets; a new owner of the partition
passes it to :meth:`WindowMerger.assign`, so what it re-reads of windows already reported is
recognised (rebuilt if still correctable, else a duplicate) rather than reported again.
"""

from __future__ import annotations

from schemas.flags import FeaturesWatermark, IpPartial

from agents.ip_windows import IpWindow

__all__ = ["MergedWindow", "WindowMerger"]

_NO_TIME = 0.0


class MergedWindow:
    """One window of the partitions a merger owns, ready to report (again, for ``revision`` > 0).

    ``parts`` keeps the IPs per ``ip-features`` partition (an IP lives in one), so a report can say
    what each partition contributed and readers can count every request once across shards;
    ``partitions`` are those this report speaks for (with nothing in ``parts``: none of its IPs).
    A partition whose window was reported before (by this merger or a previous owner) is left out
    of a fresh report: only a correction of its kept window speaks for it again.
    """

    __slots__ = ("start", "parts", "partitions", "first_offsets", "revision", "late", "missing", "dirty")

    def __init__(self, start: float, parts: dict[int, dict[str, IpWindow]], partitions: set[int],
                 first_offsets: dict[int, int], missing: list[int]):
        self.start, self.parts, self.partitions, self.missing = start, parts, partitions, missing
        self.first_offsets = first_offsets
        self.revision = self.late = 0
        self.dirty = False

    @property
    def ips(self) -> dict[str, IpWindow]:
        merged: dict[str, IpWindow] = {}
        for ips in self.parts.values():
            merged.update(ips)
        return merged


class WindowMerger:
    """Partials per window and ``ip-features`` partition, and each source's progress per partition.

    ``now`` arguments are wall seconds (monotonic), used only to bound the wait for a silent source.
    ``counts`` says what became of partials that arrived after their window was reported:
    ``corrected`` (merged, the window is reported again), ``duplicate`` (already counted), ``dropped``
    (the window was no longer kept), and how many windows were ``forced`` out without every source.
    """

    def __init__(self, window: float, sources: int, idle: float, keep: int = 16) -> None:
        self.window, self.sources, self.idle, self.keep = window, sources, idle, keep
        self.windows: dict[float, dict[int, dict[str, IpWindow]]] = {}
        self.first_offsets: dict[float, dict[int, int]] = {}
        self.kept: dict[float, MergedWindow] = {}  # forced windows still open to corrections
        self.marks: dict[int, dict[int, tuple[float, float]]] = {}  # partition -> source -> (closed_until, heard)
        self.assigned: dict[int, float] = {}  # partition -> when assigned
        self.done: dict[int, float] = {}  # partition -> every window ending by then has been reported
        self.recovered: dict[int, float] = {}  # partition -> ``done`` as the previous owner committed it
        self.evicted_until = _NO_TIME
        self.counts = {"corrected": 0, "duplicate": 0, "dropped": 0, "forced": 0}

    def assign(self, partition: int, now: float, progress: dict | None = None) -> None:
        """Own ``partition`` from ``now``; ``progress`` is what its previous owner committed, if any."""
        self.assigned[partition] = now
        self.marks[partition] = {}
        progress = progress or {}
        self.done[partition] = self.recovered[partition] = float(progress.get("done", _NO_TIME))
        for start, missing in progress.get("kept", ()):
            kept = self.kept.get(start)
            if kept is None:
                self.kept[start] = MergedWindow(start, {}, {partition}, {}, list(missing))
            else:
                kept.partitions.add(partition)
                kept.missing = sorted(set(kept.missing) | set(missing))

    def progress(self, partition: int) -> dict:
        """What a new owner of ``partition`` must know: how far it reported, which windows are still open to corrections."""
        kept = [[k.start, k.missing] for k in self.kept.values() if partition in k.partitions]
        return {"done": self.done.get(partition, _NO_TIME), "kept": kept}

    def revoke(self, partition: int) -> None:
        self.assigned.pop(partition, None)
        self.marks.pop(partition, None)
        self.done.pop(partition, None)
        self.recovered.pop(partition, None)
        for start in list(self.windows):
            self.windows[start].pop(partition, None)
            self.first_offsets[start].pop(partition, None)
            if not self.windows[start]:
                del self.windows[start], self.first_offsets[start]
        for start, kept in list(self.kept.items()):
            kept.first_offsets.pop(partition, None)
            kept.parts.pop(partition, None)
            kept.partitions.discard(partition)
            if not kept.partitions:
                del self.kept[start]

    def add_partial(self, partition: int, offset: int, partial: IpPartial) -> None:
        start = partial.window_start
        if start + self.window <= self.done.get(partition, _NO_TIME):  # reported for this partition already
            self._add_late(partition, offset, partial)
            return
        by_partition = self.windows.setdefault(start, {})
        ips = by_partition.get(partition)
        if ips is None:
            ips = by_partition[partition] = {}
            self.first_offsets.setdefault(start, {})[partition] = offset
        if not _merge(ips, partial):
            self.counts["duplicate"] += 1

    def _add_late(self, partition: int, offset: int, partial: IpPartial) -> None:
        start, end = partial.window_start, partial.window_start + self.window
        kept = self.kept.get(start)
        if kept is None:
            if self._covered(partition, partial.source, end) or end <= self.recovered.get(partition, _NO_TIME):
                self.counts["duplicate"] += 1  # its source had closed the window: counted already
                return
            if end <= self.evicted_until:
                self.counts["dropped"] += 1
                return
            kept = self.kept[start] = MergedWindow(start, {}, set(), {}, self._missing(end))  # never had it
            self._evict()
        kept.partitions.add(partition)
        if not _merge(kept.parts.setdefault(partition, {}), partial):
            self.counts["duplicate"] += 1
            return
        kept.first_offsets.setdefault(partition, offset)
        if partial.source not in kept.missing:
            return  # re-read after a restart: it was in the window's report already
        kept.late += 1
        kept.dirty = True
        self.counts["corrected"] += 1

    def add_mark(self, partition: int, mark: FeaturesWatermark, now: float) -> None:
        marks = self.marks.setdefault(partition, {})
        previous = marks.get(mark.source)
        marks[mark.source] = (max(mark.closed_until, previous[0] if previous else _NO_TIME), now)

    def _covered(self, partition: int, source: int, end: float) -> bool:
        mark = self.marks.get(partition, {}).get(source)
        return mark is not None and mark[0] >= end

    def _waiting(self, end: float, now: float) -> bool:
        """A source heard from within ``idle`` seconds has not closed ``end`` yet on some partition."""
        for partition, assigned in self.assigned.items():
            marks = self.marks.get(partition, {})
            for source in range(self.sources):
                mark = marks.get(source)
                if (mark is None or mark[0] < end) and now - (mark[1] if mark else assigned) <= self.idle:
                    return True
        return False

    def closed_until(self, partition: int, now: float) -> float | None:
        """Every window of ``partition`` ending by this has been handed out by :meth:`ready` for good: the
        least mark of its sources, leaving out those silent for ``idle`` (as :meth:`ready` does). None while a
        source never heard is still waited for, or none is left."""
        marks, heard = self.marks.get(partition, {}), []
        for source in range(self.sources):
            mark = marks.get(source)
            if mark is None:
                if now - self.assigned.get(partition, now) <= self.idle:
                    return None
            elif now - mark[1] <= self.idle:
                heard.append(mark[0])
        return min(heard, default=None)

    def _missing(self, end: float) -> list[int]:
        """The sources that have not closed ``end`` on every assigned partition."""
        return sorted({s for p in self.assigned for s in range(self.sources) if not self._covered(p, s, end)})

    def ready(self, now: float) -> list[MergedWindow]:
        """Windows to report, oldest first: the newly closed ones, then corrections of kept ones."""
        out = []
        for start in sorted(self.windows) if self.assigned else ():
            end = start + self.window
            if self._waiting(end, now):
                break
            missing = self._missing(end)
            fresh = {p for p in self.assigned if self.done.get(p, _NO_TIME) < end}
            window = MergedWindow(start, self.windows.pop(start), fresh, self.first_offsets.pop(start), missing)
            for partition in self.assigned:
                self.done[partition] = max(self.done.get(partition, _NO_TIME), end)
            if missing:
                self.counts["forced"] += 1
            kept = self.kept.get(start)
            if kept is not None:  # other partitions of this window are kept: one report speaks for all
                kept.parts.update(window.parts)
                kept.partitions |= window.partitions
                kept.first_offsets.update(window.first_offsets)
                kept.dirty = True
                continue
            if missing:
                self.kept[start] = window
            out.append(window)
        for start, kept in sorted(self.kept.items()):
            missing = self._missing(start + self.window)
            if kept.dirty:
                kept.revision += 1
                kept.dirty = False
                kept.missing = missing
                out.append(kept)
            if not missing:  # every source has covered it: nothing more can come
                del self.kept[start]
        self._evict()
        return out

    def _evict(self) -> None:
        while len(self.kept) > self.keep:
            start = min(self.kept)
            del self.kept[start]
            self.evicted_until = max(self.evicted_until, start + self.window)

    def commit_offset(self, partition: int, position: int) -> int:
        """Where a new owner must start reading: the first partial of an open or still-correctable window."""
        firsts = [offsets[partition] for offsets in self.first_offsets.values() if partition in offsets]
        firsts += [kept.first_offsets[partition] for kept in self.kept.values() if partition in kept.first_offsets]
        return min(firsts, default=position)


def _merge(ips: dict[str, IpWindow], partial: IpPartial) -> bool:
    """Add ``partial`` to its IP's window unless that source's partial is already in: True if added."""
    acc = ips.get(partial.ip)
    if acc is None:
        acc = ips[partial.ip] = IpWindow(partial.first_seen, 0)
    bit = 1 << partial.source
    if acc.sources & bit:
        return False
    acc.sources |= bit
    acc.merge(partial)
    return True
