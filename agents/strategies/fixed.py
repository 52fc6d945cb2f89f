"""``fixed``: at most ``limit`` allowed requests per epoch-aligned window of event time (exact).

Also holds :func:`decide_fixed`, the limiter's fast path for its most common case.
"""

import math

from agents.strategies.base import EPS, THROTTLE_REASONS, Check, Rule, ceil_ms
from agents.strategies.window import Counter, WindowStrategy
from schemas.decisions import ALLOW, BLOCK, THROTTLE, Decision
from schemas.events import RequestEvent

__all__ = ["STRATEGY", "FixedWindow", "decide_fixed"]


class FixedWindow(WindowStrategy):
    """Allow while ``count + 1 <= limit`` in the current window; retry when the window turns."""

    name = "fixed"

    def check(self, state: Counter, rule: Rule, ts: float) -> Check:
        window, limit = rule.window, rule.limit
        start = state.index * window
        end = start + window
        used = float(state.count)
        if used + 1 <= limit + EPS:
            return Check(True, used, limit, start, end, 0.0)
        return Check(False, used, limit, start, end, ceil_ms(end - (ts if ts > start else start)))


STRATEGY = FixedWindow()


def decide_fixed(
    event: RequestEvent, rule: Rule, counter: Counter | None, decided_at: float, blocked: str | None = None
) -> tuple[Decision, Counter]:
    """``agents.policy.decide(event, [rule], [counter], blocked, decided_at)`` for the common case, one
    fixed-window rule, without the general case's lists (a property test holds the two equal).
    ``blocked``: the blocklist's reason, if any (a banned address can be a tenth of a stream).

    Returns the decision and the counter to store; the counter is ``counter`` itself when unchanged.
    """
    window, ts, limit = rule.window, event.ts, rule.limit
    index = math.floor(ts / window)
    if counter is None or counter.window != window:
        counter = Counter(window, index, 0, 0)
    elif index > counter.index:
        counter = Counter(window, index, 0, counter.count if index == counter.index + 1 else 0)
    count = counter.count
    start = counter.index * window
    end = start + window
    if blocked is not None:  # not counted
        remaining = limit - count
        decision = Decision(event.request_id, event.user_id, event.ip, event.request_type, BLOCK, blocked, limit,
                            count, remaining if remaining > 0 else 0, start, end, 0.0, False, ts, decided_at,
                            event.status)
        return decision, counter
    if count + 1 <= limit + EPS:
        remaining = limit - count - 1
        decision = Decision(event.request_id, event.user_id, event.ip, event.request_type, ALLOW, "within_limit",
                            limit, count + 1, remaining if remaining > 0 else 0, start, end, 0.0, False, ts, decided_at,
                            event.status)
        return decision, Counter(window, counter.index, count + 1, counter.previous)
    retry_after = ceil_ms(end - (ts if ts > start else start))
    reason = THROTTLE_REASONS[rule.scope]
    remaining = limit - count
    if rule.shadow:
        verdict, reason = ALLOW, "shadow:" + reason
    else:
        verdict = THROTTLE
    decision = Decision(event.request_id, event.user_id, event.ip, event.request_type, verdict, reason, limit, count,
                        remaining if remaining > 0 else 0, start, end, retry_after, rule.shadow, ts, decided_at,
                        event.status)
    return decision, counter
