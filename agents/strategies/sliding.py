"""``sliding``: the sliding-window counter, as Cloudflare describes it.

The requests counted against the limit at ``ts`` are the current window's allowed count plus the
previous window's, weighted by how much of it still overlaps the trailing window ``(ts - W, ts]``.
"""

from agents.strategies.base import EPS, Check, Rule, ceil_ms
from agents.strategies.window import Counter, WindowStrategy, roll

__all__ = ["STRATEGY", "SlidingWindow", "weighted_count"]


def weighted_count(counter: Counter, window: float, ts: float) -> tuple[float, float, float]:
    """(requests counted against the limit, window start, the time judged) for a rolled counter."""
    start = counter.index * window
    now = max(ts, start)
    return counter.count + counter.previous * (window - (now - start)) / window, start, now


class SlidingWindow(WindowStrategy):
    """Allow while the weighted count plus one fits the limit; retry when enough has slid out."""

    name = "sliding"

    def check(self, state: Counter, rule: Rule, ts: float) -> Check:
        window, limit = rule.window, rule.limit
        used, start, now = weighted_count(state, window, ts)
        end = start + window
        if used + 1 <= limit + EPS:
            return Check(True, used, limit, start, end, 0.0)
        if limit < 1:
            # Nothing is ever allowed: tell the client to come back when the window turns.
            return Check(False, used, limit, start, end, ceil_ms(end - now))
        count, previous = state.count, state.previous
        if count + 1 <= limit:
            # Throttled by the previous window's weight: wait until enough of it has slid out.
            wait = window - (now - start) - window * (limit - 1 - count) / previous
        else:
            # The current window alone is full: it must become the previous one and slide out.
            wait = (end - now) + max(0.0, window - window * (limit - 1) / count)
        wait = ceil_ms(max(wait, 0.001))
        # The closed form and the check round differently at large timestamps: step to the first
        # millisecond that the check itself allows, so a retry at ts + retry_after always passes.
        while weighted_count(roll(state, window, now + wait), window, now + wait)[0] + 1 > limit + EPS:
            wait = round(wait + 0.001, 3)
        return Check(False, used, limit, start, end, wait)


STRATEGY = SlidingWindow()
