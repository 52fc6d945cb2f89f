"""Counting decisions per second by verdict, and refused requests per user, over the last hour.

Pure and bounded: one ring of :data:`SECONDS` slots per verdict (a slot remembers which second it
holds, so a slot of a second an hour old is reset when that second comes round again), and a ring
of 60 per-minute tallies of refused requests per user, each holding at most ``max_users`` users (the
rest are counted as untracked). :class:`ratewarden.gateway.console.pulse_reader.PulseReader` feeds
it from the decisions topic; the overview reads it.
"""

import logging

__all__ = ["PulseCounts", "SECONDS", "VERDICTS"]

logger = logging.getLogger(__name__)

#: Seconds of history the rings hold.
SECONDS = 3_600
VERDICTS = ("allow", "throttle", "block")
_MINUTES = 60


class PulseCounts:
    """Decisions counted since the console began reading, per second of their decision time."""

    def __init__(self, seconds: int = SECONDS, max_users: int = 2_000) -> None:
        self.seconds, self.max_users = seconds, max_users
        self._second = [-1] * seconds
        self._counts = {verdict: [0] * seconds for verdict in VERDICTS}
        self.total = 0
        self.by_verdict = dict.fromkeys(VERDICTS, 0)
        self.late = 0  # decisions older than the ring: counted in the totals only
        self.unknown = 0  # a verdict this console does not know (a newer worker?)
        self.untracked_users = 0
        self._minute = [-1] * _MINUTES
        self._refused: list[dict[str, int]] = [{} for _ in range(_MINUTES)]

    def add(self, verdict: str, user_id: str, ts: float) -> None:
        """One decision of ``verdict`` for ``user_id`` decided at ``ts`` (seconds since the epoch)."""
        counts = self._counts.get(verdict)
        if counts is None:
            self.unknown += 1
            return
        self.total += 1
        self.by_verdict[verdict] += 1
        second = int(ts)
        slot = second % self.seconds
        held = self._second[slot]
        if held != second:
            if held > second:
                self.late += 1
                return
            self._second[slot] = second
            for series in self._counts.values():
                series[slot] = 0
        counts[slot] += 1
        if verdict != "allow":
            self._refuse(user_id, second // 60)

    def _refuse(self, user_id: str, minute: int) -> None:
        slot = minute % _MINUTES
        if self._minute[slot] != minute:
            if self._minute[slot] > minute:
                return
            self._minute[slot] = minute
            self._refused[slot] = {}
        tally = self._refused[slot]
        if user_id in tally:
            tally[user_id] += 1
        elif len(tally) < self.max_users:
            tally[user_id] = 1
        else:
            self.untracked_users += 1

    def count(self, verdict: str, second: int) -> int:
        slot = second % self.seconds
        return self._counts[verdict][slot] if self._second[slot] == second else 0

    def series(self, now: float, span: int | None = None) -> dict[str, list[int]]:
        """``{"t": seconds, verdict: counts, ...}`` for the last ``span`` whole seconds before ``now``."""
        span = self.seconds if span is None else min(span, self.seconds)
        end = int(now)
        seconds = list(range(end - span, end))
        out: dict[str, list[int]] = {"t": seconds}
        for verdict in VERDICTS:
            out[verdict] = [self.count(verdict, s) for s in seconds]
        return out

    def rates(self, now: float, span: int = 5) -> dict[str, float]:
        """Decisions per second by verdict, averaged over the last ``span`` whole seconds before ``now``."""
        end = int(now)
        return {verdict: sum(self.count(verdict, s) for s in range(end - span, end)) / span for verdict in VERDICTS}

    def shares(self, now: float, span: int = 60) -> dict[str, float | None]:
        """The throttled and blocked shares of the decisions of the last ``span`` seconds (None: none)."""
        rates = self.rates(now, span)
        total = sum(rates.values())
        return {verdict: (rates[verdict] / total if total else None) for verdict in ("throttle", "block")}

    def top_refused(self, now: float, limit: int = 10) -> list[tuple[str, int]]:
        """The users refused most in the last hour, most first."""
        first = int(now) // 60 - _MINUTES + 1
        totals: dict[str, int] = {}
        for minute, tally in zip(self._minute, self._refused):
            if minute >= first:
                for user_id, n in tally.items():
                    totals[user_id] = totals.get(user_id, 0) + n
        return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:limit]
