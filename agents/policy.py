"""The decision, as a pure function: counters, rules, blocklist, shadow and event time -> Decision.

Nothing here reads a clock, a topic or a store, so replays and tests are deterministic. The hot path
(``agents.limiter``) only looks up the inputs, calls :func:`decide` and stores what it returns.

Semantics, in one place:

* Windows are aligned to the epoch: window ``i`` covers ``[i*W, (i+1)*W)`` of event time.
* A counter counts the requests that were (or, in shadow mode, would have been) allowed. Throttled
  and blocked requests do not count, so ``retry_after`` is the true time until the next allow.
* ``fixed``: allow while ``count + 1 <= limit`` in the current window (exact).
* ``sliding``: the sliding-window counter (as Cloudflare describes it): the previous window's count
  weighted by its overlap with the trailing window, plus the current count.
* An event older than the counter's window (out of order within a user) is judged at the start of
  the counter's current window: counters never move backwards.
* Every applicable rule must allow. A rule in shadow mode never throttles: the verdict stays
  ``allow`` with ``shadow=True`` and the reason says what enforcement would have done.
* A blocklisted user or IP gets ``block`` whatever the counters say, and is not counted.
"""

import math
from typing import NamedTuple, Sequence

from schemas.decisions import ALLOW, BLOCK, THROTTLE, Decision
from schemas.events import RequestEvent

__all__ = ["Counter", "Rule", "Check", "check", "decide", "decide_fixed", "roll"]

#: Slack for float comparisons; retry_after is rounded up to the millisecond.
_EPS = 1e-9


class Rule(NamedTuple):
    """One limit that applies to a request; ``key`` names the counter it uses."""

    key: str
    limit: int
    window: float
    algorithm: str = "fixed"
    shadow: bool = False
    scope: str = "user"  # "user" or "type": which limit this is, for the decision's reason


class Counter(NamedTuple):
    """The state of one counter: window length, current window index, and allowed counts."""

    window: float
    index: int
    count: int
    previous: int


class Check(NamedTuple):
    """One rule's verdict on one request, before counting it."""

    allowed: bool
    used: float  # requests counted against the limit, before this one
    window_start: float
    reset_at: float
    retry_after: float


def roll(counter: Counter | None, window: float, ts: float) -> Counter:
    """The counter moved to the window that holds ``ts`` (late events keep the current window)."""
    index = math.floor(ts / window)
    if counter is None or counter.window != window:
        return Counter(window, index, 0, 0)
    if index <= counter.index:
        return counter
    previous = counter.count if index == counter.index + 1 else 0
    return Counter(window, index, 0, previous)


def _ceil_ms(seconds: float) -> float:
    return math.ceil(seconds * 1000.0 - 1e-6) / 1000.0


def check(counter: Counter, rule: Rule, ts: float) -> Check:
    """Would one more request at ``ts`` be allowed by ``rule``, given its rolled ``counter``?"""
    window = rule.window
    used, start, now = _used(counter, rule, ts)
    elapsed = now - start
    end = start + window
    limit, count, previous = rule.limit, counter.count, counter.previous
    if used + 1 <= limit + _EPS:
        return Check(True, used, start, end, 0.0)
    if limit < 1:
        # Nothing is ever allowed: tell the client to come back when the window turns.
        return Check(False, used, start, end, _ceil_ms(end - now))
    if rule.algorithm != "sliding":
        return Check(False, used, start, end, _ceil_ms(end - now))
    if count + 1 <= limit:
        # Throttled by the previous window's weight: wait until enough of it has slid out.
        wait = window - elapsed - window * (limit - 1 - count) / previous
    else:
        # The current window alone is full: it must become the previous one and slide out.
        wait = (end - now) + max(0.0, window - window * (limit - 1) / count)
    wait = _ceil_ms(max(wait, 0.001))
    # The closed form and the check round differently at large timestamps: step to the first
    # millisecond that the check itself allows, so a retry at ts + retry_after always passes.
    while not _allows(roll(counter, window, now + wait), rule, now + wait):
        wait = round(wait + 0.001, 3)
    return Check(False, used, start, end, wait)


def _used(counter: Counter, rule: Rule, ts: float) -> tuple[float, float, float]:
    """(requests counted against the limit, window start, the time judged) for a rolled counter."""
    window = rule.window
    start = counter.index * window
    now = max(ts, start)
    used = float(counter.count)
    if rule.algorithm == "sliding":
        used += counter.previous * (window - (now - start)) / window
    return used, start, now


def _allows(counter: Counter, rule: Rule, ts: float) -> bool:
    return _used(counter, rule, ts)[0] + 1 <= rule.limit + _EPS



def decide(
    event: RequestEvent,
    rules: Sequence[Rule],
    counters: Sequence[Counter | None],
    blocked: str | None,
    decided_at: float,
) -> tuple[Decision, list[Counter]]:
    """Decide one request; return the decision and the counters to store (same order as rules).

    Written as plain loops: it runs once per event on the hot path.
    """
    ts = event.ts
    rolled = [roll(counter, rule.window, ts) for rule, counter in zip(rules, counters)]
    checks = [check(counter, rule, ts) for rule, counter in zip(rules, rolled)]
    if blocked is not None:
        return _decision(event, BLOCK, blocked, rules, checks, 0 if rules else None, 0, False, decided_at), rolled
    # Governing rule: the enforced failing rule with the longest wait, else a shadow one; if all
    # allow, the rule with the least headroom.
    governing, enforced, failed = 0, False, False
    for i, result in enumerate(checks):
        if result.allowed:
            if not failed and rules[i].limit - result.used < rules[governing].limit - checks[governing].used:
                governing = i
            continue
        is_enforced = not rules[i].shadow
        if not failed or (is_enforced and not enforced) or (
            is_enforced == enforced and result.retry_after > checks[governing].retry_after
        ):
            governing, enforced, failed = i, enforced or is_enforced, True
    if not failed:
        rolled = [Counter(c.window, c.index, c.count + 1, c.previous) for c in rolled]
        return _decision(event, ALLOW, "within_limit", rules, checks, governing, 1, False, decided_at), rolled
    reason = "rate_limited" if rules[governing].scope == "user" else "rate_limited_type"
    if enforced:
        return _decision(event, THROTTLE, reason, rules, checks, governing, 0, False, decided_at), rolled
    return _decision(event, ALLOW, "shadow:" + reason, rules, checks, governing, 0, True, decided_at), rolled


def decide_fixed(event: RequestEvent, rule: Rule, counter: Counter | None, decided_at: float) -> tuple[Decision, Counter]:
    """``decide(event, [rule], [counter], None, decided_at)`` for the common case, one fixed-window rule
    and no blocklist entry, without the general case's lists (a property test holds the two equal).

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
    if count + 1 <= limit + _EPS:
        remaining = limit - count - 1
        decision = Decision(event.request_id, event.user_id, event.ip, event.request_type, ALLOW, "within_limit",
                            limit, count + 1, remaining if remaining > 0 else 0, start, end, 0.0, False, ts, decided_at)
        return decision, Counter(window, counter.index, count + 1, counter.previous)
    retry_after = _ceil_ms(end - (ts if ts > start else start))
    reason = "rate_limited" if rule.scope == "user" else "rate_limited_type"
    remaining = limit - count
    if rule.shadow:
        verdict, reason = ALLOW, "shadow:" + reason
    else:
        verdict = THROTTLE
    decision = Decision(event.request_id, event.user_id, event.ip, event.request_type, verdict, reason, limit, count,
                        remaining if remaining > 0 else 0, start, end, retry_after, rule.shadow, ts, decided_at)
    return decision, counter


def _decision(
    event: RequestEvent,
    verdict: str,
    reason: str,
    rules: Sequence[Rule],
    checks: Sequence[Check],
    governing: int | None,
    added: int,
    shadow: bool,
    decided_at: float,
) -> Decision:
    if governing is None:
        limit = count = remaining = 0
        window_start = reset_at = event.ts
        retry_after = 0.0
    else:
        limit = rules[governing].limit
        _, used, window_start, reset_at, retry_after = checks[governing]
        count = math.floor(used + _EPS) + added
        remaining = limit - math.ceil(used - _EPS) - added
        if remaining < 0:
            remaining = 0
        if verdict != THROTTLE and not shadow:
            retry_after = 0.0
    # Positional, in field order: this runs once per event.
    return Decision(
        event.request_id, event.user_id, event.ip, event.request_type, verdict, reason, limit, count,
        remaining, window_start, reset_at, retry_after, shadow, event.ts, decided_at,
    )
