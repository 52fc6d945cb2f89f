"""The pure decision function: boundaries of both algorithms, retry_after, shadow, block."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.policy import Rule, check, decide, decide_fixed
from agents.strategies.window import Counter, roll
from schemas.events import RequestEvent

T0 = 1_732_900_020.0  # 20 s into window 28881667 of 60 s


def event(ts: float, user: str = "u1", kind: str = "read", rid: str = "r") -> RequestEvent:
    return RequestEvent(request_id=rid, user_id=user, ip="203.0.113.7", request_type=kind, ts=ts)


def run(rules, times, blocked=None):
    """Decide events at ``times`` in order, carrying counters like the hot path does."""
    counters = [None] * len(rules)
    out = []
    for i, ts in enumerate(times):
        decision, counters = decide(event(ts, rid=f"r{i}"), rules, counters, blocked, decided_at=ts)
        out.append(decision)
    return out, counters


def test_fixed_window_allows_exactly_the_limit_then_throttles_until_the_window_turns():
    rule = Rule("u1", limit=3, window=60.0)
    decisions, counters = run([rule], [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 39.999])
    assert [d.verdict for d in decisions] == ["allow", "allow", "allow", "throttle", "throttle"]
    assert [d.count for d in decisions] == [1, 2, 3, 3, 3]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    window_start = math.floor(T0 / 60) * 60
    assert decisions[3].window_start == window_start and decisions[3].reset_at == window_start + 60
    assert decisions[3].retry_after == pytest.approx(window_start + 60 - (T0 + 3), abs=1e-3)
    assert decisions[0].retry_after == 0.0
    assert counters[0].count == 3  # throttled requests are not counted
    nxt, _ = decide(event(window_start + 60), [rule], counters, None, 0.0)
    assert nxt.verdict == "allow" and nxt.count == 1 and nxt.window_start == window_start + 60


def test_window_boundary_belongs_to_the_next_window():
    rule = Rule("u1", limit=1, window=10.0)
    decisions, _ = run([rule], [100.0, 109.999, 110.0])
    assert [d.verdict for d in decisions] == ["allow", "throttle", "allow"]


def test_sliding_window_weights_the_previous_window_by_overlap():
    rule = Rule("u1", limit=10, window=60.0, algorithm="sliding")
    start = 60.0 * 1000
    prev = Counter(60.0, 1000 - 1, 10, 0)  # 10 allowed in the previous window
    # 15 s into the window: previous weight 0.75 -> 7.5 used; 2 more fit (8.5, 9.5), the third would be 10.5.
    rolled = roll(prev, 60.0, start + 15)
    assert rolled == Counter(60.0, 1000, 0, 10)
    decisions = []
    counters = [prev]
    for i in range(4):
        d, counters = decide(event(start + 15, rid=str(i)), [rule], counters, None, 0.0)
        decisions.append(d)
    assert [d.verdict for d in decisions] == ["allow", "allow", "throttle", "throttle"]
    # 7.5 + 2 = 9.5 used; the next fits when 10*(60-e)/60 + 2 + 1 <= 10, i.e. e >= 18: 3 s more.
    assert decisions[3].retry_after == pytest.approx(3.0, abs=1e-3)
    assert decisions[3].count == 9 and decisions[3].remaining == 0


def test_sliding_retry_after_when_the_current_window_is_full_spans_into_the_next():
    rule = Rule("u1", limit=4, window=60.0, algorithm="sliding")
    counter = Counter(60.0, 10, 4, 0)  # current window already holds 4 allowed
    result = check(counter, rule, 600.0 + 30)
    assert not result.allowed
    # next window: 4 * (60 - e)/60 + 1 <= 4  ->  e >= 15; so 30 s to the turn plus 15 s.
    assert result.retry_after == pytest.approx(45.0, abs=1e-3)


def test_limit_zero_never_allows():
    decisions, _ = run([Rule("u1", limit=0, window=60.0)], [T0, T0 + 100])
    assert [d.verdict for d in decisions] == ["throttle", "throttle"]
    assert all(d.retry_after > 0 for d in decisions)


def test_shadow_mode_allows_but_records_what_enforcement_would_do():
    rule = Rule("u1", limit=2, window=60.0, shadow=True)
    decisions, counters = run([rule], [T0, T0 + 1, T0 + 2])
    assert [d.verdict for d in decisions] == ["allow", "allow", "allow"]
    assert [d.shadow for d in decisions] == [False, False, True]
    assert decisions[2].reason == "shadow:rate_limited" and decisions[2].retry_after > 0
    assert counters[0].count == 2  # counted as enforcement would count


def test_enforced_rule_wins_over_shadow_rule():
    rules = [Rule("u1", limit=1, window=60.0), Rule("u1\x1flogin", limit=1, window=60.0, shadow=True, scope="type")]
    decisions, _ = run(rules, [T0, T0 + 1])
    assert decisions[1].verdict == "throttle" and not decisions[1].shadow and decisions[1].reason == "rate_limited"


def test_typed_limit_throttles_with_its_own_reason_and_counts_only_allowed():
    rules = [Rule("u1", limit=100, window=60.0), Rule("u1\x1flogin", limit=2, window=60.0, scope="type")]
    decisions, counters = run(rules, [T0, T0 + 1, T0 + 2])
    assert [d.verdict for d in decisions] == ["allow", "allow", "throttle"]
    assert decisions[2].reason == "rate_limited_type" and decisions[2].limit == 2
    assert counters[0].count == 2 and counters[1].count == 2


def test_block_wins_over_counters_and_is_not_counted():
    decisions, counters = run([Rule("u1", limit=5, window=60.0)], [T0, T0 + 1], blocked="ip_blocked")
    assert [(d.verdict, d.reason) for d in decisions] == [("block", "ip_blocked")] * 2
    assert counters[0].count == 0 and not decisions[0].shadow


def test_late_event_is_judged_in_the_current_window():
    rule = Rule("u1", limit=1, window=60.0)
    decisions, counters = run([rule], [T0 + 60, T0])  # second one is a window late
    assert [d.verdict for d in decisions] == ["allow", "throttle"]
    assert counters[0].index == math.floor((T0 + 60) / 60)


def test_window_change_resets_the_counter():
    assert roll(Counter(60.0, 5, 9, 9), 30.0, 330.0) == Counter(30.0, 11, 0, 0)
    assert roll(Counter(60.0, 5, 9, 9), 60.0, 60.0 * 8) == Counter(60.0, 8, 0, 0)


def test_decision_carries_the_event_and_decision_times():
    d, _ = decide(event(T0), [Rule("u1", 5, 60.0)], [None], None, decided_at=T0 + 0.25)
    assert (d.ts_event, d.ts_decided, d.request_id, d.ip, d.request_type) == (T0, T0 + 0.25, "r", "203.0.113.7", "read")


@settings(max_examples=400, deadline=None)
@given(
    limit=st.integers(1, 50),
    window=st.sampled_from([1.0, 10.0, 60.0, 3600.0]),
    count=st.integers(0, 60),
    previous=st.integers(0, 60),
    offset=st.floats(0, 0.999),
    algorithm=st.sampled_from(["fixed", "sliding"]),
)
def test_retry_after_is_exactly_when_the_next_request_is_allowed(limit, window, count, previous, offset, algorithm):
    rule = Rule("u1", limit, window, algorithm)
    index = 1_000_000
    counter = Counter(window, index, min(count, limit), previous)
    ts = (index + offset) * window
    result = check(counter, rule, ts)
    if result.allowed:
        return
    later = ts + result.retry_after
    assert check(roll(counter, window, later), rule, later).allowed
    earlier = later - 0.002
    if earlier > ts:
        assert not check(roll(counter, window, earlier), rule, earlier).allowed


_counters = st.one_of(
    st.none(),
    st.builds(Counter, window=st.sampled_from([1.0, 60.0, 0.5]), index=st.integers(1_000_000, 1_000_003),
              count=st.integers(0, 120), previous=st.integers(0, 120)),
)


@settings(max_examples=1500, deadline=None)
@given(
    limit=st.integers(0, 100),
    window=st.sampled_from([1.0, 60.0, 0.5, 0.001]),
    shadow=st.booleans(),
    scope=st.sampled_from(["user", "type"]),
    counter=_counters,
    ts=st.floats(500_000.0, 70_000_000.0, allow_nan=False),
    blocked=st.sampled_from([None, "ip_blocklisted", "user_blocklisted"]),
)
def test_fixed_fast_path_equals_the_general_decision(limit, window, shadow, scope, counter, ts, blocked):
    """The hot path's ``decide_fixed`` is ``decide`` with one fixed rule, blocked or not: same decision,
    same counter to store, and the same object back when nothing changed."""
    rule = Rule("u1", limit, window, "fixed", shadow, scope)
    request = event(ts)
    expected, (expected_counter,) = decide(request, [rule], [counter], blocked, decided_at=ts + 0.25)
    got, got_counter = decide_fixed(request, rule, counter, ts + 0.25, blocked)
    assert got == expected
    assert got_counter == expected_counter
    assert (got_counter is counter) == (expected_counter is counter)
