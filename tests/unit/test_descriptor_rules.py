"""Descriptor matching as envoyproxy/ratelimit does it: precedence, depth, unlimited, shadow, replaces, counter keys."""

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.descriptor_rules import MatchedLimit, Resolved, RuleBook, counter_key
from schemas.descriptors import RulesDocument

NOTHING = Resolved(None, False, None)


def book(*descriptors: dict, domain: str = "edge") -> RuleBook:
    rules = RuleBook()
    rules.put(domain, msgspec.convert({"domain": domain, "descriptors": list(descriptors)}, RulesDocument))
    return rules


def limit(rpu: int, unit: str = "second", **extra) -> dict:
    return {"rate_limit": {"unit": unit, "requests_per_unit": rpu, **extra}}


def one(rules: RuleBook, *entries: tuple[str, str], domain: str = "edge") -> Resolved:
    return rules.resolve(domain, [list(entries)])[0]


def test_key_value_rule_is_preferred_over_the_key_only_rule():
    rules = book({"key": "user", **limit(10)}, {"key": "user", "value": "vip", **limit(100)})
    assert one(rules, ("user", "vip")).limit.requests_per_unit == 100
    assert one(rules, ("user", "vip")).limit.rule == "user_vip"
    assert one(rules, ("user", "bob")).limit.requests_per_unit == 10
    assert one(rules, ("user", "bob")).limit.rule == "user"


def test_nested_descriptors_match_the_whole_path_and_report_it():
    rules = book({"key": "user_id", "value": "u1", "descriptors": [{"key": "request_type", **limit(5, "minute")}]})
    got = one(rules, ("user_id", "u1"), ("request_type", "read"))
    assert got.limit == MatchedLimit("edge", "user_id_u1.request_type", 5, "minute", 60.0, None, "fixed",
                                     False, False, ())
    assert got.counter == counter_key("edge", [("user_id", "u1"), ("request_type", "read")], 60.0)


def test_key_only_rule_counts_each_value_apart():
    rules = book({"key": "remote_address", **limit(3)})
    a, b = one(rules, ("remote_address", "10.0.0.1")), one(rules, ("remote_address", "10.0.0.2"))
    assert a.limit == b.limit
    assert a.counter != b.counter


def test_partial_and_overlong_descriptors_match_nothing():
    rules = book({"key": "a", "descriptors": [{"key": "b", **limit(1)}]}, {"key": "flat", **limit(1)})
    assert one(rules, ("a", "x")) == NOTHING  # the node has no rate_limit of its own
    assert one(rules, ("a", "x"), ("b", "y"), ("c", "z")) == NOTHING
    assert one(rules, ("flat", "x"), ("more", "y")) == NOTHING
    assert one(rules, ("other", "x")) == NOTHING
    assert rules.resolve("edge", [[]]) == [NOTHING]


def test_unknown_domain_matches_nothing_and_removal_forgets_a_domain():
    rules = book({"key": "a", **limit(1)})
    assert rules.resolve("elsewhere", [[("a", "x")], [("a", "y")]]) == [NOTHING, NOTHING]
    assert "edge" in rules and len(rules) == 1 and rules.document("edge").domain == "edge"
    rules.put("edge", None)
    assert "edge" not in rules and len(rules) == 0 and rules.document("edge") is None
    assert one(rules, ("a", "x")) == NOTHING


def test_unlimited_is_reported_without_a_counter():
    rules = book({"key": "health", "unlimited": True}, {"key": "path", "value": "/", "unlimited": True, **limit(1)})
    assert one(rules, ("health", "x")) == Resolved(None, True, None)
    assert one(rules, ("path", "/")) == Resolved(None, True, None)  # unlimited wins over a stored rate_limit


def test_shadow_mode_and_algorithm_are_carried_on_the_limit():
    rules = book({"key": "a", "shadow_mode": True, **limit(2, "hour", algorithm="sliding", name="n")})
    got = one(rules, ("a", "x")).limit
    assert (got.shadow, got.algorithm, got.name, got.window) == (True, "sliding", "n", 3600.0)


def test_requests_per_unit_zero_is_a_limit():
    got = one(book({"key": "a", **limit(0)}), ("a", "x"))
    assert got.limit.requests_per_unit == 0 and got.counter is not None


@pytest.fixture
def replacing() -> RuleBook:
    return book({"key": "user", **limit(5, name="base")},
                {"key": "route", "value": "/upload", **limit(50), "replaces": [{"name": "base"}]},
                {"key": "free", "unlimited": True, "replaces": [{"name": "base"}]})


def test_replaced_limit_is_dropped_only_when_the_replacing_one_matches(replacing):
    alone = replacing.resolve("edge", [[("user", "u1")], [("route", "/other")]])
    assert alone[0].limit.name == "base" and alone[1] == NOTHING
    both = replacing.resolve("edge", [[("user", "u1")], [("route", "/upload")]])
    assert both[0] == NOTHING
    assert both[1].limit.requests_per_unit == 50 and both[1].limit.replaces == ("base",)


def test_an_unlimited_rule_still_replaces(replacing):
    assert replacing.resolve("edge", [[("free", "x")], [("user", "u1")]]) == [Resolved(None, True, None), NOTHING]


def test_wildcard_value_after_exact_and_before_key_only():
    rules = book({"key": "path", **limit(1)}, {"key": "path", "value": "/files*", **limit(2)},
                 {"key": "path", "value": "/files/special", **limit(3)})
    assert one(rules, ("path", "/files/special")).limit.requests_per_unit == 3
    assert one(rules, ("path", "/files/a")).limit.requests_per_unit == 2
    assert one(rules, ("path", "/files/a")).limit.rule == "path_/files*"
    assert one(rules, ("path", "/img")).limit.requests_per_unit == 1


def test_replacing_a_document_swaps_the_tree_and_a_unit_change_starts_a_new_counter():
    rules = book({"key": "a", **limit(1)})
    before = one(rules, ("a", "x")).counter
    rules.put("edge", msgspec.convert({"domain": "edge", "descriptors": [{"key": "a", **limit(1, "minute")}]},
                                      RulesDocument))
    assert one(rules, ("a", "x")).counter != before


pairs = st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=4)


@given(st.text(max_size=6), pairs, st.sampled_from([1.0, 60.0]), st.text(max_size=6), pairs,
       st.sampled_from([1.0, 60.0]))
def test_counter_key_is_unambiguous(domain_a, entries_a, window_a, domain_b, entries_b, window_b):
    same = (domain_a, entries_a, window_a) == (domain_b, entries_b, window_b)
    assert (counter_key(domain_a, entries_a, window_a) == counter_key(domain_b, entries_b, window_b)) == same


def test_counter_key_separator_characters_cannot_forge_another_key():
    assert counter_key("d", [("a", 'b"],["c')], 1) != counter_key("d", [("a", "b"), ("c", "")], 1)
    assert counter_key("d", [("a_b", "c")], 1) != counter_key("d", [("a", "b_c")], 1)
    assert counter_key("d", [("a", "b")], 60) == counter_key("d", [("a", "b")], 60.0)
