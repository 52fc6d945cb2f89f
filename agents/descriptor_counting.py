"""One descriptor hit against its counter, as a pure function: the rate limit service's decision core.

Counting follows envoyproxy/ratelimit, so a proxy moved over from it sees the same answers: every
hit counts (``hits_addend`` of them), also when the answer is ``OVER_LIMIT`` (a Redis ``INCRBY``
does the same); the answer is ``OVER_LIMIT`` once the count after the hit exceeds the limit, with
``remaining`` 0; ``shadow_mode`` answers ``OK`` but still reports ``remaining`` 0. Windows are the
unit, aligned to the epoch (a day starts at 00:00 UTC); ``reset_after`` is the reference's
``unit - now % unit`` in whole seconds of the hit's event time.

``algorithm: sliding`` (a ratewarden extension) weighs the previous window's count by its overlap
with the trailing window, as the limiter's sliding strategy does; its ``count`` is that weighted
count rounded up. The state is the limiter's window :class:`agents.strategies.window.Counter`, so
the same codec, changelog and expiry serve both.

``algorithm: gcra`` (also ratewarden's) is the limiter's GCRA strategy: ``requests_per_unit`` per
unit as a steady rate, ``burst`` more at once. Its hits are all or nothing and a refused hit does
not move the bucket (counting refusals would push the bucket's empty time ever further: a client
that keeps calling would never be let through again); ``remaining`` is the hits that would fit now,
``count`` the bucket's fill, ``reset_after`` the seconds until it is empty. A state of the other kind
(the rule switched algorithms) starts afresh.
"""

import math

from agents.strategies.base import EPS, Rule
from agents.strategies.gcra import STRATEGY as GCRA, GcraState
from agents.strategies.sliding import weighted_count
from agents.strategies.window import Counter, roll
from schemas.descriptors import DescriptorAnswer, DescriptorHit

__all__ = ["count_hit"]


def count_hit(counter: Counter | GcraState | None, hit: DescriptorHit,
              decided_at: float) -> tuple[DescriptorAnswer, Counter | GcraState]:
    """The answer to ``hit`` given its stored state, and the state to store."""
    if hit.algorithm == "gcra":
        return _gcra(counter if type(counter) is GcraState else None, hit, decided_at)
    if type(counter) is not Counter:
        counter = None
    window, ts, limit = hit.window, hit.ts, hit.limit
    rolled = roll(counter, window, ts)
    used, start, now = weighted_count(rolled, window, ts)
    if hit.algorithm != "sliding":
        used = float(rolled.count)
    count = math.ceil(used + hit.hits - EPS)
    over = count > limit
    answer = DescriptorAnswer(
        hit.request_id, hit.counter, "OK" if not over or hit.shadow else "OVER_LIMIT", limit, window, count,
        0 if over else limit - count, _reset_after(window, start, now), hit.shadow, ts, decided_at,
    )
    return answer, Counter(window, rolled.index, rolled.count + hit.hits, rolled.previous)


def _gcra(state: GcraState | None, hit: DescriptorHit, decided_at: float) -> tuple[DescriptorAnswer, GcraState]:
    rule = Rule(hit.counter, hit.limit, hit.window, "gcra", hit.shadow, "user", hit.burst)
    ts = hit.ts
    before = after = GCRA.advance(state, rule, ts)
    allowed = True
    for _ in range(hit.hits):
        if not GCRA.check(after, rule, ts).allowed:
            allowed, after = False, before  # all or nothing
            break
        after = GCRA.record(after, rule, ts)
    now = GCRA.check(after, rule, ts)
    remaining = int(now.capacity - now.used) if now.allowed else 0
    answer = DescriptorAnswer(
        hit.request_id, hit.counter, "OK" if allowed or hit.shadow else "OVER_LIMIT", hit.limit, hit.window,
        now.capacity - remaining, remaining, max(0.0, after.tat - ts), hit.shadow, ts, decided_at,
    )
    return answer, after


def _reset_after(window: float, start: float, now: float) -> float:
    """Seconds until the window turns: whole seconds of ``now`` as the reference counts them."""
    if window >= 1 and window == int(window):
        return float(int(window) - int(math.floor(now)) % int(window))
    return start + window - now
