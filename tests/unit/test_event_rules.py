"""The request stream's limits as descriptor rules of the ``ratewarden`` domain: where they stand among
records, tiers and the default, what they count under, the headers they name, and what a file for the
domain may not hold (each refusal naming its line)."""

import pytest

from agents.policy import decide
from agents.rules import limit_key, member_key, tier_key
from agents.rules_file import RulesFileError, load_rules
from ratewarden.gateway.headers import PolicyCache
from schemas.descriptors import RULES_KEY_PREFIX
from schemas.events import RequestEvent
from schemas.limits import RateLimit, TierLimit, TierMembership

RULES = """\
domain: ratewarden
descriptors:
  - key: user_id
    rate_limit: {unit: minute, requests_per_unit: 50}
    descriptors:
      - key: request_type
        value: login
        rate_limit: {unit: minute, requests_per_unit: 5}
  - key: user_id
    value: alice
    rate_limit: {unit: second, requests_per_unit: 10, algorithm: sliding}
    descriptors:
      - key: request_type
        value: export
        rate_limit: {unit: hour, requests_per_unit: 2, algorithm: gcra, burst: 1}
  - key: user_id
    value: partner-*
    rate_limit: {unit: second, requests_per_unit: 500}
    shadow_mode: true
"""


def shape(rules):
    return [(r.key, r.limit, r.window, r.algorithm, r.shadow, r.scope) for r in rules]


def load(apply, text: str = RULES) -> None:
    (document,) = load_rules(text)
    apply(RULES_KEY_PREFIX + document.domain, document)


def test_the_document_stands_between_records_tiers_and_the_default(book, apply):
    assert shape(book.rules_for("bob", "read")) == [("bob", 100, 60.0, "fixed", False, "user")]
    load(apply)
    # the key-only rule: every user, counted apart, under the user's own key
    assert shape(book.rules_for("bob", "read")) == [("bob", 50, 60.0, "fixed", False, "user")]
    assert shape(book.rules_for("bob", "login")) == [("bob", 50, 60.0, "fixed", False, "user"),
                                                     (limit_key("bob", "login"), 5, 60.0, "fixed", False, "type")]
    # the rule for a user's id (and its typed child); the strategy's key suffix as for a record
    alice = book.rules_for("alice", "export")
    assert [(r.limit, r.window, r.algorithm, r.scope, r.burst) for r in alice] == [
        (10, 1.0, "sliding", "user", None), (2, 3600.0, "gcra", "type", 1)]
    assert alice[0].key.startswith("alice") and alice[1].key.startswith(limit_key("alice", "export"))
    # the typed rules are looked up under the user rule reached: alice's rule has no "login" child
    assert [r.scope for r in book.rules_for("alice", "login")] == ["user"]
    # a wildcard value, in shadow mode
    assert shape(book.rules_for("partner-7", "read")) == [("partner-7", 500, 1.0, "fixed", True, "user")]

    # a tier beats the key-only rule, not the rule for the user's id
    apply(tier_key("gold"), TierLimit(tier="gold", limit=1000, window=10.0))
    apply(tier_key("gold", "login"), TierLimit(tier="gold", limit=9, request_type="login"))
    apply(member_key("bob"), TierMembership(user_id="bob", tier="gold"))
    apply(member_key("alice"), TierMembership(user_id="alice", tier="gold"))
    assert [(r.limit, r.scope) for r in book.rules_for("bob", "login")] == [(1000, "tier"), (9, "tier_type")]
    assert [(r.limit, r.scope) for r in book.rules_for("alice", "read")] == [(10, "user")]

    # a record beats them all; removing it, and then the document, brings back what stood below
    apply("alice", RateLimit(user_id="alice", limit=3))
    apply(limit_key("alice", "export"), RateLimit(user_id="alice", limit=1, request_type="export"))
    assert [(r.limit, r.scope) for r in book.rules_for("alice", "export")] == [(3, "user"), (1, "type")]
    apply("alice", None)
    apply(limit_key("alice", "export"), None)
    assert [(r.limit, r.scope) for r in book.rules_for("alice", "export")] == [(10, "user"), (2, "type")]
    apply(RULES_KEY_PREFIX + "ratewarden", None)
    assert [(r.limit, r.scope) for r in book.rules_for("alice", "export")] == [(1000, "tier")]
    assert shape(book.rules_for("carol", "login")) == [("carol", 100, 60.0, "fixed", False, "user")]


def test_a_document_rule_decides_like_a_record_of_the_same_numbers(book, apply):
    load(apply)
    rules = book.rules_for("dave", "login")
    states = [None] * len(rules)
    verdicts = []
    for i in range(7):
        event = RequestEvent(f"r{i}", "dave", "203.0.113.7", "login", 1_700_000_040.0 + i)
        decision, states = decide(event, rules, states, None, event.ts)
        verdicts.append((decision.verdict, decision.reason, decision.limit))
    assert verdicts == [("allow", "within_limit", 5)] * 5 + [("throttle", "rate_limited_type", 5)] * 2


def test_the_headers_name_a_document_rule_for_the_user_its_own(book, apply):
    load(apply)
    cache = PolicyCache(book)
    assert cache.get("bob", "read").names == ("default",)  # the key-only rule: no limit of bob's own
    assert cache.get("alice", "export").names == ("user", "type")
    assert book.has_own("partner-1") and not book.has_own("bob")


def test_other_domains_stay_out_of_the_book(book, apply):
    load(apply, RULES.replace("domain: ratewarden", "domain: edge"))
    assert shape(book.rules_for("bob", "read")) == [("bob", 100, 60.0, "fixed", False, "user")]


BAD = """\
domain: ratewarden
descriptors:
  - key: remote_addr
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: user_id
    value: vip
    unlimited: true
  - key: user_id
    value: heavy
    rate_limit: {unit: week, requests_per_unit: 1}
    descriptors:
      - key: user_id
        rate_limit: {unit: second, requests_per_unit: 1}
      - key: request_type
        rate_limit: {unit: second, requests_per_unit: 1}
        descriptors:
          - key: route
            rate_limit: {unit: second, requests_per_unit: 1}
  - key: user_id
    value: light
    rate_limit: {unit: second, requests_per_unit: 1, name: light}
    replaces: [{name: other}]
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 1}
    descriptors:
      - key: request_type
        rate_limit: {unit: second, requests_per_unit: 1}
"""


def test_what_the_stream_cannot_take_is_refused_by_line():
    """Each refusal names the line of its descriptor (the ``- key:`` line)."""
    with pytest.raises(RulesFileError) as refused:
        load_rules(BAD, "stream.yaml")
    assert [(e.line, e.message.split(":")[0]) for e in refused.value.errors] == [
        (3, "the ratewarden domain takes the key 'user_id' or 'remote_address' here, not 'remote_addr'"),
        (5, "'unlimited' and 'replaces' do not apply in the ratewarden domain"),
        (8, "unit 'week' is longer than the ratewarden domain takes (a day at most)"),
        (12, "the ratewarden domain takes the key 'request_type' here, not 'user_id'"),
        (17, "the ratewarden domain has two levels"),
        (19, "'unlimited' and 'replaces' do not apply in the ratewarden domain"),
        (23, "'remote_address' has no levels under it in the ratewarden domain"),
    ]
    assert "stream.yaml: line 3:" in str(refused.value)
    # the same shapes are fine in another domain (the rate limit service's)
    assert load_rules(BAD.replace("domain: ratewarden", "domain: edge"))[0].domain == "edge"


def test_address_rules_by_value_wildcard_or_key_alone(book, apply):
    assert not book.rules.addresses and book.rules.address("203.0.113.7") is None
    load(apply, RULES + """\
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 20}
  - key: remote_address
    value: 198.51.100.*
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: remote_address
    value: 203.0.113.9
    rate_limit: {unit: hour, requests_per_unit: 1}
""")
    assert book.rules.addresses
    found = {ip: (m.rule, m.requests_per_unit, m.window) for ip in ("203.0.113.7", "198.51.100.4", "203.0.113.9")
             if (m := book.rules.address(ip)) is not None}
    assert found == {"203.0.113.7": ("remote_address", 20, 1.0),
                     "198.51.100.4": ("remote_address_198.51.100.*", 3, 60.0),
                     "203.0.113.9": ("remote_address_203.0.113.9", 1, 3600.0)}
    assert [r.scope for r in book.rules_for("bob", "login")] == ["user", "type"]  # user rules as before


def test_a_refusal_header_reads_back_and_a_bad_one_says_what_is_wrong():
    from agents.policy import decide_refused
    from schemas.refusals import AddressRefusal, address_refusal, refusal_header

    refusal = AddressRefusal("remote_address", 3, 60.0, 5, 12.5)
    assert address_refusal([("ratewarden-reply-topic", b"replies"), refusal_header(refusal)]) == refusal
    assert address_refusal([("ratewarden-reply-topic", b"replies")]) is None
    for bad in (b"{", b'{"rule": "x"}', b'{"rule":"x","limit":3,"window":0,"count":1,"reset_after":1}'):
        with pytest.raises(ValueError, match="bad ratewarden-address-limit header"):
            address_refusal([("ratewarden-address-limit", bad)])
    event = RequestEvent("r1", "dave", "203.0.113.7", "read", 1_700_000_047.5)
    throttled = decide_refused(event, refusal, None, event.ts)
    assert (throttled.verdict, throttled.reason, throttled.limit, throttled.count, throttled.remaining,
            throttled.retry_after, throttled.reset_at, throttled.window_start) == (
        "throttle", "rate_limited_address", 3, 5, 0, 12.5, 1_700_000_060.0, 1_700_000_000.0)
    assert decide_refused(event, refusal, "ip_blocked", event.ts).verdict == "block"
