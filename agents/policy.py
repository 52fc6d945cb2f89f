"""The decision, as a pure function: states, rules, blocklist, shadow and event time -> Decision.

Nothing here reads a clock, a topic or a store, so replays and tests are deterministic. The hot path
(``agents.limiter``) only looks up the inputs, calls :func:`decide` (or, for one fixed-window rule,
blocked or not, :func:`decide_fixed`) and stores what it returns.

Semantics, in one place (each algorithm's own are in its module under ``agents.strategies``):

* A rule's state counts the requests that were (or, in shadow mode, would have been) allowed.
  Throttled and blocked requests do not count, so ``retry_after`` is the true time until the next
  allow, rounded up to the millisecond.
* Every applicable rule must allow. A rule in shadow mode never throttles: the verdict stays
  ``allow`` with ``shadow=True`` and the reason says what enforcement would have done.
* A blocklisted user or IP gets ``block`` whatever the states say, and is not counted.
* A request its gateway found over an address limit is throttled and not counted (:func:`decide_refused`).
"""

import math
from typing import Any, Callable, Sequence

from agents.strategies.base import ADDRESS_REASON, EPS, THROTTLE_REASONS, Check, Rule, ceil_ms
from agents.strategies.fixed import decide_fixed
from agents.strategies.registry import STRATEGIES
from schemas.decisions import ALLOW, BLOCK, THROTTLE, Decision
from schemas.events import RequestEvent
from schemas.refusals import AddressRefusal

__all__ = ["Check", "Rule", "check", "decide", "decide_and_store", "decide_fixed", "decide_refused"]


def check(state: Any, rule: Rule, ts: float) -> Check:
    """Would one more request at ``ts`` be allowed by ``rule``, given its stored ``state``?"""
    strategy = STRATEGIES[rule.algorithm]
    return strategy.check(strategy.advance(state, rule, ts), rule, ts)


def decide(
    event: RequestEvent,
    rules: Sequence[Rule],
    states: Sequence[Any],
    blocked: str | None,
    decided_at: float,
) -> tuple[Decision, list[Any]]:
    """Decide one request; return the decision and the states to store (same order as rules).

    Written as plain loops: it runs once per event on the hot path.
    """
    ts = event.ts
    strategies = [STRATEGIES[rule.algorithm] for rule in rules]
    advanced = [s.advance(state, rule, ts) for s, rule, state in zip(strategies, rules, states)]
    checks = [s.check(state, rule, ts) for s, rule, state in zip(strategies, rules, advanced)]
    if blocked is not None:
        return _decision(event, BLOCK, blocked, rules, checks, 0 if rules else None, 0, False, decided_at), advanced
    # Governing rule: the enforced failing rule with the longest wait, else a shadow one; if all
    # allow, the rule with the least headroom.
    governing, enforced, failed = 0, False, False
    for i, result in enumerate(checks):
        if result.allowed:
            if not failed and result.capacity - result.used < checks[governing].capacity - checks[governing].used:
                governing = i
            continue
        is_enforced = not rules[i].shadow
        if not failed or (is_enforced and not enforced) or (
            is_enforced == enforced and result.retry_after > checks[governing].retry_after
        ):
            governing, enforced, failed = i, enforced or is_enforced, True
    if not failed:
        recorded = [s.record(state, rule, ts) for s, rule, state in zip(strategies, rules, advanced)]
        return _decision(event, ALLOW, "within_limit", rules, checks, governing, 1, False, decided_at), recorded
    reason = THROTTLE_REASONS[rules[governing].scope]
    if enforced:
        return _decision(event, THROTTLE, reason, rules, checks, governing, 0, False, decided_at), advanced
    return _decision(event, ALLOW, "shadow:" + reason, rules, checks, governing, 0, True, decided_at), advanced


def decide_refused(event: RequestEvent, refusal: AddressRefusal, blocked: str | None, decided_at: float) -> Decision:
    """A request its gateway found over an address limit (``schemas.refusals``): throttled with the address
    limit's numbers, or blocked if blocklisted; counted against none of the user's rules."""
    if blocked is not None:
        return _decision(event, BLOCK, blocked, (), (), None, 0, False, decided_at)
    ts = event.ts
    reset_at = ts + refusal.reset_after
    return Decision(
        event.request_id, event.user_id, event.ip, event.request_type, THROTTLE, ADDRESS_REASON,
        refusal.limit, refusal.count, 0, reset_at - refusal.window, reset_at, ceil_ms(refusal.reset_after), False,
        ts, decided_at, event.status,
    )


def decide_and_store(event: RequestEvent, rules: Sequence[Rule], blocked: str | None,
                     get: Callable[[str], Any], set_: Callable[[str, Any], None], decided_at: float) -> Decision:
    """:func:`decide` over states read with ``get`` by rule key; the states it changed written with ``set_``.

    The limiter's path for every request but one under a single fixed-window rule (which it inlines
    with :func:`decide_fixed`); the what-if replay (``agents.whatif``) takes the same path."""
    before = [get(rule.key) for rule in rules]
    decision, after = decide(event, rules, before, blocked, decided_at)
    for rule, old, new in zip(rules, before, after):
        if new is not old:
            set_(rule.key, new)
    return decision


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
        _, used, capacity, window_start, reset_at, retry_after = checks[governing]
        count = math.floor(used + EPS) + added
        remaining = capacity - math.ceil(used - EPS) - added
        if remaining < 0:
            remaining = 0
        if verdict != THROTTLE and not shadow:
            retry_after = 0.0
    # Positional, in field order: this runs once per event.
    return Decision(
        event.request_id, event.user_id, event.ip, event.request_type, verdict, reason, limit, count,
        remaining, window_start, reset_at, retry_after, shadow, event.ts, decided_at, event.status,
    )
