"""The RateLimit fields (draft-ietf-httpapi-ratelimit-headers-11) as a pure function of limits and a decision."""

import re

import pytest

from gateway_fakes import decision

from agents.rules import LimitBook
from agents.strategies.base import Rule
from ratewarden.gateway.headers import USER, PolicyCache, governing, policies, rate_fields, rate_headers
from schemas.limits import RateLimit


OWN = Rule("u", 10, 60.0)
TYPED = Rule("u\x1ft", 2, 3600.0, scope="type")


_STRING = r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"'
_PARAM = r";([a-z*][a-z0-9_.*-]*)=(-?[0-9]{1,15})"
_ITEM = re.compile(_STRING + r"((?:" + _PARAM + r")*)")


def parsed(value: str) -> list[tuple[str, dict]]:
    """An RFC 8941 List of String items with Integer parameters (all these fields use), parsed strictly:
    (the String, its parameters) per member; anything else fails the test."""
    members, rest = [], value
    while True:
        match = _ITEM.match(rest)
        assert match, f"not an RFC 8941 String item with Integer parameters: {rest!r} (in {value!r})"
        params = dict((k, int(v)) for k, v in re.findall(_PARAM, match.group(2)))
        members.append((re.sub(r"\\(.)", r"\1", match.group(1)), params))
        rest = rest[match.end():]
        if not rest:
            return members
        assert re.match(r"[ \t]*,[ \t]*", rest), f"bad list separator in {value!r}"
        rest = re.sub(r"^[ \t]*,[ \t]*", "", rest)
        assert rest, f"trailing comma in {value!r}"


def test_one_item_per_limit_named_after_the_limit():
    assert policies([OWN], own_limit=False).value == '"default";q=10;w=60'
    assert policies([OWN], own_limit=True).value == f'"{USER}";q=10;w=60'
    both = policies([OWN, TYPED], own_limit=True)
    assert both.names == (USER, "type")
    assert parsed(both.value) == [(USER, {"q": 10, "w": 60}), ("type", {"q": 2, "w": 3600})]
    assert policies([Rule("u", 5, 0.25)], own_limit=False).value == '"default";q=5;w=1'  # w: whole seconds, >= 1


def test_ratelimit_names_the_governing_limit_by_its_numbers():
    both = policies([OWN, TYPED], own_limit=False)
    user_decided = decision()
    type_decided = decision(limit=2, remaining=0, window_start=0.0, reset_at=3600.0, ts_event=1217.25,
                            verdict="throttle", reason="rate_limited_type", retry_after=2382.75)
    assert governing(both, user_decided) == 0 and governing(both, type_decided) == 1
    policy, ratelimit = rate_fields(both, type_decided)
    assert policy == both.value
    assert parsed(ratelimit) == [("type", {"r": 0, "t": 2383})]
    assert parsed(rate_fields(both, user_decided)[1]) == [("default", {"r": 7, "t": 43})]


def test_alike_limits_are_told_apart_by_the_reason():
    alike = policies([OWN, OWN._replace(key="u\x1ft", scope="type")], own_limit=True)
    assert governing(alike, decision()) == 0
    assert governing(alike, decision(verdict="throttle", reason="rate_limited_type")) == 1


def test_a_decision_under_numbers_the_gateway_lacks_shows_its_own():
    stale = policies([Rule("u", 1000, 60.0), TYPED], own_limit=True)  # the worker already has 3 per hour
    policy, ratelimit = rate_fields(stale, decision(limit=3, remaining=1, window_start=0.0, reset_at=3600.0))
    assert parsed(policy) == [(USER, {"q": 3, "w": 3600}), ("type", {"q": 2, "w": 3600})]
    assert parsed(ratelimit)[0][0] == USER


def test_rounding_of_seconds():
    assert rate_headers(decision(ts_event=1259.999, remaining=0))["RateLimit"] == '"default";r=0;t=1'
    assert rate_headers(decision(ts_event=1260.0, remaining=0))["RateLimit"] == '"default";r=0;t=0'
    assert rate_headers(decision(window_start=0.0, reset_at=0.5, ts_event=0.25))["RateLimit-Policy"].endswith("w=1")


@pytest.mark.parametrize("request_type", ["t", 'quo"te', "back\\slash"])
def test_the_cache_follows_limit_changes_and_names_stay_valid(request_type):
    book = LimitBook(100, 60.0)
    cache = PolicyCache(book)
    assert cache.get("u", request_type).value == '"default";q=100;w=60'
    assert cache.get("u", request_type) is cache.get("u", request_type)
    book.put("u", RateLimit(user_id="u", limit=5, window=10.0))
    book.put(f"u\x1f{request_type}", RateLimit(user_id="u", limit=1, window=1.0, request_type=request_type))
    assert parsed(cache.get("u", request_type).value) == [(USER, {"q": 5, "w": 10}), ("type", {"q": 1, "w": 1})]
    book.put("u", None)
    assert parsed(cache.get("u", request_type).value)[0] == ("default", {"q": 100, "w": 60})


def test_a_refusal_by_the_address_limit_names_the_address_policy():
    from ratewarden.gateway.answers import Answers
    from streams.settings import Settings

    book = LimitBook(10, 60.0)
    answers = Answers(Settings(), PolicyCache(book))
    refused = decision(verdict="throttle", reason="rate_limited_address", limit=3, count=4, remaining=0,
                       window_start=1177.25, reset_at=1237.25, retry_after=20.0)
    answer = answers(answers_outcome(refused))
    assert answer.code == 429 and answer.retry_after == "20"
    assert parsed(answer.policy) == [("default", {"q": 10, "w": 60}), ("address", {"q": 3, "w": 60})]
    assert parsed(answer.ratelimit) == [("address", {"r": 0, "t": 20})]
    assert answer.body["reason"] == "rate_limited_address"


def answers_outcome(d):
    from ratewarden.gateway.runtime import Outcome
    from schemas.events import RequestEvent

    return Outcome(RequestEvent(d.request_id, d.user_id, d.ip, d.request_type, d.ts_event), d)
