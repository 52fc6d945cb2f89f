"""GCRA (``agents.strategies.gcra``): burst, steady rate, retry_after exact to the millisecond, the
decision's fields and headers, and an exact (integer-millisecond) oracle over random request runs."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.policy import Rule, check, decide
from agents.rules import LimitBook
from agents.state_codec import STATE_CODEC
from agents.strategies.gcra import STRATEGY, GcraState
from ratewarden.gateway.routes.requests import rate_headers
from schemas.events import RequestEvent
from schemas.limits import RateLimit

T0 = 1_732_900_020.0


def event(ts: float, rid: str = "r", user: str = "u1") -> RequestEvent:
    return RequestEvent(request_id=rid, user_id=user, ip="203.0.113.7", request_type="read", ts=ts)


def run(rule: Rule, times, state=None):
    out = []
    for i, ts in enumerate(times):
        decision, (state,) = decide(event(ts, f"r{i}"), [rule], [state], None, ts)
        out.append(decision)
    return out, state


def test_a_rested_key_takes_burst_plus_one_at_once_then_one_per_interval():
    rule = Rule("u1", limit=10, window=10.0, algorithm="gcra", burst=3)  # T = 1 s, tau = 3 s
    decisions, state = run(rule, [T0] * 5)
    assert [d.verdict for d in decisions] == ["allow"] * 4 + ["throttle"]
    assert [d.remaining for d in decisions] == [3, 2, 1, 0, 0]
    assert [d.count for d in decisions] == [1, 2, 3, 4, 4]
    assert [d.reset_at for d in decisions] == [T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 4]
    assert all(d.limit == 10 and d.reset_at - d.window_start == 10.0 for d in decisions)
    assert decisions[4].retry_after == 1.0
    assert state == GcraState(10.0, T0 + 4)
    later, _ = run(rule, [T0 + 0.999, T0 + 1.0, T0 + 1.5, T0 + 2.0], state)
    assert [d.verdict for d in later] == ["throttle", "allow", "throttle", "allow"]
    assert [d.retry_after for d in later] == [0.001, 0.0, 0.5, 0.0]


def test_without_burst_requests_are_spaced_by_the_emission_interval():
    rule = Rule("u1", limit=4, window=1.0, algorithm="gcra")  # T = 0.25 s, burst 0
    times = [T0 + 0.25 * i for i in range(40)]
    decisions, _ = run(rule, times)
    assert all(d.verdict == "allow" and d.remaining == 0 for d in decisions)  # the steady rate holds forever
    decisions, _ = run(rule, [T0, T0 + 0.249, T0 + 0.25, T0 + 0.25])
    assert [d.verdict for d in decisions] == ["allow", "throttle", "allow", "throttle"]
    assert [d.retry_after for d in decisions] == [0.0, 0.001, 0.0, 0.25]


def test_retry_after_is_rounded_up_to_the_millisecond_that_is_allowed():
    rule = Rule("u1", limit=7, window=60.0, algorithm="gcra")  # T = 8.5714... s
    (first, second), state = run(rule, [T0, T0 + 1])
    assert first.verdict == "allow" and second.verdict == "throttle"
    assert second.retry_after == 7.572  # 60/7 - 1 = 7.5714..., rounded up
    assert check(state, rule, T0 + 1 + 7.572).allowed
    assert not check(state, rule, T0 + 1 + 7.571).allowed


def test_limit_zero_never_allows_and_throttled_requests_do_not_count():
    decisions, _ = run(Rule("u1", limit=0, window=30.0, algorithm="gcra", burst=5), [T0, T0 + 100])
    assert [(d.verdict, d.retry_after) for d in decisions] == [("throttle", 30.0)] * 2
    rule = Rule("u1", limit=1, window=10.0, algorithm="gcra")
    decisions, state = run(rule, [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 10])
    assert [d.verdict for d in decisions] == ["allow", "throttle", "throttle", "throttle", "allow"]
    assert state.tat == T0 + 20


def test_late_events_are_judged_against_the_later_arrival_time():
    rule = Rule("u1", limit=2, window=2.0, algorithm="gcra")
    decisions, _ = run(rule, [T0, T0 - 5])
    assert [d.verdict for d in decisions] == ["allow", "throttle"] and decisions[1].retry_after == 6.0


def test_headers_show_the_quota_per_window_and_the_time_to_a_full_bucket():
    rule = Rule("u1", limit=100, window=60.0, algorithm="gcra", burst=9)
    decisions, _ = run(rule, [T0] * 3)
    headers = rate_headers(decisions[2])
    assert headers["RateLimit-Policy"] == '"default";q=100;w=60'
    assert headers["RateLimit"] == '"default";r=7;t=2'  # 3 * 0.6 s = 1.8 s until empty


def test_state_has_its_own_key_codec_and_expiry():
    book = LimitBook(10, 60.0)
    book.put("u1", RateLimit(user_id="u1", limit=5, algorithm="gcra", burst=2))
    (rule,) = book.rules_for("u1", "read")
    assert rule.key == "u1\x1egcra" and rule.burst == 2
    state = GcraState(60.0, T0)
    raw = STATE_CODEC.encode(state)
    assert raw[0] == 0x31 and len(raw) == 17 and STATE_CODEC.decode(raw) == state
    assert not STRATEGY.expired(state, T0 + 119.0) and STRATEGY.expired(state, T0 + 120.0)


def oracle(limit: int, interval_ms: int, burst: int, times_ms: list[int]):
    """Exact GCRA in integer milliseconds: (verdict, remaining, retry_after in ms) per request."""
    tau, tat, out = interval_ms * burst, None, []
    for ts in times_ms:
        tat0 = ts if tat is None or tat < ts else tat
        if tat0 - ts <= tau:
            tat = tat0 + interval_ms
            out.append(("allow", (tau + interval_ms - (tat - ts)) // interval_ms, 0))
        else:
            out.append(("throttle", 0, tat0 - tau - ts))
    return out


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 50),
    interval_ms=st.integers(1, 5_000),
    burst=st.integers(0, 10),
    gaps=st.lists(st.integers(0, 3_000), min_size=1, max_size=60),
)
def test_decisions_equal_an_exact_integer_millisecond_oracle(limit, interval_ms, burst, gaps):
    rule = Rule("u1", limit, interval_ms * limit / 1000, "gcra", burst=burst)
    start_ms = 1_732_900_000_000
    times_ms = [start_ms + sum(gaps[: i + 1]) for i in range(len(gaps))]
    decisions, _ = run(rule, [t / 1000 for t in times_ms])
    got = [(d.verdict, d.remaining, round(d.retry_after * 1000)) for d in decisions]
    assert got == oracle(limit, interval_ms, burst, times_ms)


@settings(max_examples=400, deadline=None)
@given(
    limit=st.integers(1, 1_000),
    window=st.floats(0.001, 86_400),
    burst=st.integers(0, 20),
    tat_ahead=st.floats(0, 86_400),
    ts=st.floats(1.0e9, 2.0e9),
)
def test_a_request_at_retry_after_is_allowed_and_one_millisecond_earlier_is_not(limit, window, burst, tat_ahead, ts):
    rule = Rule("u1", limit, window, "gcra", burst=burst)
    state = GcraState(window, ts + tat_ahead)
    result = check(state, rule, ts)
    if result.allowed:
        return
    assert result.retry_after == pytest.approx(math.ceil((state.tat - window / limit * burst - ts) * 1000) / 1000,
                                               abs=0.0011)
    assert check(state, rule, ts + result.retry_after).allowed
    # One millisecond earlier: the retry_after one millisecond smaller (the same float expression).
    assert not check(state, rule, ts + round(result.retry_after - 0.001, 3)).allowed
