"""Every registered strategy against the protocol (one suite for all, like a backend suite), and the
algorithm list declared once in ``schemas.limits`` reaching the registry, CLI, HTTP API and schema."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.policy import Rule, check, decide
from agents.rules import LimitBook
from agents.state_codec import LEGACY_SIZE, STATE_CODEC
from agents.strategies.registry import STRATEGIES, strategy
from ratewarden.cli import build_parser
from ratewarden.gateway.models import Limit, LimitBody
from ratewarden.schema_files import SCHEMA_DIR
from schemas.events import RequestEvent
from schemas.limits import ALGORITHMS, RateLimit

T0 = 1_732_900_020.0


def event(ts: float, rid: str = "r") -> RequestEvent:
    return RequestEvent(request_id=rid, user_id="u1", ip="203.0.113.7", request_type="read", ts=ts)


def test_the_registry_covers_exactly_the_declared_algorithms():
    assert tuple(STRATEGIES) == ALGORITHMS
    for name in ALGORITHMS:
        assert strategy(name).name == name
    with pytest.raises(KeyError, match="unknown algorithm"):
        strategy("leaky")


def test_cli_http_api_and_schema_file_offer_the_declared_algorithms():
    limits = next(a for a in build_parser()._subparsers._group_actions[0].choices["limits"]._actions
                  if a.dest == "algorithm")
    assert tuple(limits.choices) == ALGORITHMS
    for model in (LimitBody, Limit):
        assert tuple(model.model_json_schema()["properties"]["algorithm"]["enum"]) == ALGORITHMS
    schema = json.loads((SCHEMA_DIR / "rate_limit.schema.json").read_text())
    assert sorted(schema["$defs"]["RateLimit"]["properties"]["algorithm"]["enum"]) == sorted(ALGORITHMS)  # msgspec sorts


def test_strategies_sharing_a_state_type_share_its_tag_and_key():
    by_type = {}
    for s in STRATEGIES.values():
        first = by_type.setdefault(s.state_type, s)
        assert (s.state_id, s.state_version, s.key_suffix) == (first.state_id, first.state_version, first.key_suffix)
    suffixes = {s.state_type: s.key_suffix for s in STRATEGIES.values()}
    assert len(set(suffixes.values())) == len(suffixes)  # a state key never holds another type's state


@pytest.mark.parametrize("name", ALGORITHMS)
def test_limit_book_rules_carry_the_burst_and_the_strategy_key(name):
    book = LimitBook(10, 60.0)
    book.put("u1", RateLimit(user_id="u1", limit=5, window=30.0, algorithm=name, burst=2))
    (rule,) = book.rules_for("u1", "read")
    assert rule == Rule("u1" + STRATEGIES[name].key_suffix, 5, 30.0, name, False, "user", 2)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_fresh_state_allows_and_round_trips_through_the_codec(name):
    s = STRATEGIES[name]
    rule = Rule("u1", 3, 60.0, name, burst=1)
    fresh = s.advance(None, rule, T0)
    assert type(fresh) is s.state_type
    assert s.check(fresh, rule, T0).allowed
    recorded = s.record(fresh, rule, T0)
    raw = STATE_CODEC.encode(recorded)
    assert len(raw) != LEGACY_SIZE and raw[0] == s.state_id << 4 | s.state_version
    assert STATE_CODEC.decode(raw) == recorded
    assert not STATE_CODEC.expired(recorded, T0)
    assert STATE_CODEC.expired(recorded, T0 + 86_400 * 10)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(ALGORITHMS),
    limit=st.integers(1, 20),
    burst=st.none() | st.integers(0, 5),
    window=st.sampled_from([1.0, 10.0, 60.0]),
    gaps=st.lists(st.floats(0, 2.0), min_size=1, max_size=40),
    start=st.floats(1.0e9, 2.0e9),
)
def test_a_retry_at_retry_after_is_allowed_and_a_millisecond_earlier_is_not(name, limit, burst, window, gaps, start):
    """Drive any strategy with requests; whenever one is throttled, check the retry it was given."""
    rule = Rule("u1", limit, window, name, burst=burst)
    state, ts = None, start
    for i, gap in enumerate(gaps):
        ts += gap
        decision, (state,) = decide(event(ts, str(i)), [rule], [state], None, ts)
        assert decision.remaining >= 0 and decision.count >= 0
        if decision.verdict == "throttle":
            later = ts + decision.retry_after
            assert check(state, rule, later).allowed
            # Two milliseconds earlier is refused by every strategy (as in test_policy: the window
            # algorithms round up from event times whose float rounding can cross a millisecond).
            if decision.retry_after >= 0.003:
                assert not check(state, rule, ts + round(decision.retry_after - 0.002, 3)).allowed
        else:
            assert decision.retry_after == 0.0 and math.isfinite(decision.reset_at)
