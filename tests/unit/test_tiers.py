"""Tiers of limits: resolution user -> tier -> default, typed limits, the shape cache, the records on the
limits topic (old ones still read), the CLI's validation and the gateway's routes (on the fakes)."""

import msgspec
import pytest

from agents.control_tables import limits_table
from agents.policy import decide
from agents.rules import limit_key, member_key, tier_key
from gateway_fakes import api_client, decision
from ratewarden.cli import main
from ratewarden.gateway.headers import policies
from schemas.events import RequestEvent
from schemas.limits import RateLimit, TierLimit, TierMembership, check_tier_name
from streams.settings import Settings

NOW = 1_700_000_000.0


def shape(rules):
    return [(r.key, r.limit, r.window, r.scope) for r in rules]


def test_own_limit_then_tier_then_default(book, apply):
    apply(tier_key("gold"), TierLimit(tier="gold", limit=1000, window=10.0))
    apply(member_key("alice"), TierMembership(user_id="alice", tier="gold"))
    assert shape(book.rules_for("alice", "x")) == [("alice", 1000, 10.0, "tier")]  # counted as alice's own
    assert shape(book.rules_for("bob", "x")) == [("bob", 100, 60.0, "user")]
    apply("alice", RateLimit(user_id="alice", limit=5))
    assert shape(book.rules_for("alice", "x")) == [("alice", 5, 60.0, "user")]  # a user's own limit wins
    apply("alice", None)
    assert shape(book.rules_for("alice", "x")) == [("alice", 1000, 10.0, "tier")]
    assert book.tier_of("alice") == "gold" and book.members("gold") == 1 and len(book) == 0


def test_typed_limits_of_the_user_then_of_its_tier(book, apply):
    apply(tier_key("gold", "login"), TierLimit(tier="gold", limit=3, request_type="login"))
    apply(member_key("alice"), TierMembership(user_id="alice", tier="gold"))
    key = limit_key("alice", "login")
    # no untyped tier limit: the default, then the tier's typed limit, counted under the user's typed key
    assert shape(book.rules_for("alice", "login")) == [("alice", 100, 60.0, "user"), (key, 3, 60.0, "tier_type")]
    assert shape(book.rules_for("alice", "search")) == [("alice", 100, 60.0, "user")]
    apply(key, RateLimit(user_id="alice", limit=1, request_type="login"))
    assert shape(book.rules_for("alice", "login"))[1] == (key, 1, 60.0, "type")


def test_changes_reach_cached_shapes_and_tombstones_too(book, apply):
    apply(member_key("alice"), TierMembership(user_id="alice", tier="gold"))
    assert shape(book.rules_for("alice", "x"))[0][1] == 100  # a tier without limits: the default
    cached = book.rules_for("alice", "x")
    assert book.rules_for("alice", "x") is cached  # the cache is the per-event cost
    apply(tier_key("gold"), TierLimit(tier="gold", limit=7))
    assert shape(book.rules_for("alice", "x"))[0][1] == 7
    apply(tier_key("gold"), TierLimit(tier="gold", limit=8))
    assert shape(book.rules_for("alice", "x"))[0][1] == 8
    apply(member_key("alice"), TierMembership(user_id="alice", tier="silver"))
    assert shape(book.rules_for("alice", "x"))[0][1] == 100
    apply(member_key("alice"), TierMembership(user_id="alice", tier="gold"))
    assert shape(book.rules_for("alice", "x"))[0][1] == 8
    apply(member_key("alice"), None)
    assert shape(book.rules_for("alice", "x"))[0] == ("alice", 100, 60.0, "user")
    apply(member_key("alice"), TierMembership(user_id="alice", tier="gold"))
    apply(tier_key("gold"), None)
    assert shape(book.rules_for("alice", "x"))[0] == ("alice", 100, 60.0, "user")
    assert book.members("gold") == 1 and book.tiers() == {"gold": []}


def test_records_under_another_key_and_bad_names_are_refused(book, apply):
    table = limits_table(Settings(), book)
    with pytest.raises(ValueError):  # the table logs and skips these
        table._apply(b"tier:gold", msgspec.json.encode(TierLimit(tier="silver", limit=1)))
    with pytest.raises(ValueError):
        table._apply(b"member:alice", msgspec.json.encode(TierMembership(user_id="bob", tier="gold")))
    with pytest.raises(msgspec.ValidationError):
        table._apply(b"tier:bad name", b'{"tier": "bad name", "limit": 1}')
    assert book.tiers() == {}
    for name in ("gold", "tier-1", "a.b_C", "x" * 32):
        assert check_tier_name(name) == name
    for name in ("", "x" * 33, "bad name", "a/b", "a:b", "gölд", ".", "..", "-x", "gold\n"):
        with pytest.raises(ValueError):
            check_tier_name(name)


def test_old_limit_records_still_read_and_rules_documents_still_routed(book, apply):
    table = limits_table(Settings(), book)
    table._apply(b"alice", b'{"user_id": "alice", "limit": 2, "window": 30.0}')  # as written before tiers
    table._apply(b"alice\x1flogin", b'{"user_id": "alice", "limit": 1, "request_type": "login"}')
    assert [r.limit for r in book.rules_for("alice", "login")] == [2, 1]
    table._apply(b"domain:edge", b'{"domain": "edge", "descriptors": []}')  # no rule book here: skipped
    assert len(book) == 2 and book.tiers() == {}


def test_the_reason_and_the_policy_name_say_a_tier_governed(book, apply):
    apply(tier_key("gold"), TierLimit(tier="gold", limit=1, window=60.0))
    apply(tier_key("gold", "login"), TierLimit(tier="gold", limit=5, request_type="login"))
    apply(member_key("alice"), TierMembership(user_id="alice", tier="gold"))
    rules = book.rules_for("alice", "login")
    event = RequestEvent("r1", "alice", "192.0.2.1", "login", NOW)
    first, states = decide(event, rules, [None, None], None, NOW)
    second, _ = decide(event, rules, states, None, NOW)
    assert first.verdict == "allow" and (second.verdict, second.reason) == ("throttle", "rate_limited_tier")
    assert policies(rules, own_limit=False).value == '"tier";q=1;w=60, "tier_type";q=5;w=60'


@pytest.mark.parametrize("argv", [
    ["limits", "tier", "set", "bad name", "5"], ["limits", "tier", "set", "gold", "-1"],
    ["limits", "tier", "set", "gold", "5", "--window", "0"], ["limits", "tier", "assign", "alice", "x" * 33],
    ["limits", "set", "tier:gold", "5"], ["limits", "set", "member:alice", "5"],
])
def test_bad_cli_input_exits_2_before_kafka_is_asked(argv):
    assert main(argv) == 2


def test_cli_usage_errors_exit_2():
    for argv in (["limits", "tier"], ["limits", "tier", "set", "gold"], ["-v", "limits", "tier", "nope"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2


@pytest.fixture
def api():
    yield from api_client()


def test_gateway_tier_routes(api):
    admin, analyst, client = api.key_for("admin"), api.key_for("analyst"), api.key_for("client")
    body = {"limit": 10, "window": 30, "types": [{"request_type": "login", "limit": 2}]}
    assert api.put("/tiers/gold", json=body, headers=analyst).status_code == 403
    made = api.put("/tiers/gold", json=body, headers=admin)
    assert made.status_code == 200, made.text
    assert made.json() == {"name": "gold", "members": 0, "limit": {
        "limit": 10, "window": 30.0, "request_type": None, "algorithm": "fixed", "shadow": False, "burst": None},
        "types": [{"limit": 2, "window": 60.0, "request_type": "login", "algorithm": "fixed", "shadow": False,
                   "burst": None}]}
    assert api.put("/tiers/gold/members/alice", headers=admin).json() == {"user_id": "alice", "tier": "gold"}
    assert api.get("/tiers/gold", headers=analyst).json()["members"] == 1
    assert api.get("/tiers", headers=client).status_code == 403
    book = api.gateway.limits
    assert [r.scope for r in book.rules_for("alice", "login")] == ["tier", "tier_type"]
    assert api.put("/tiers/gold", json={"limit": 4}, headers=admin).json()["types"] == []  # replaced whole
    assert [r.limit for r in book.rules_for("alice", "login")] == [4]
    assert api.put("/tiers/silver/members/alice", headers=admin).status_code == 404  # no such tier
    assert api.delete("/tiers/gold/members/bob", headers=admin).status_code == 404
    assert api.delete("/tiers/gold/members/alice", headers=admin).status_code == 204
    assert book.rules_for("alice", "login")[0].limit == 50  # the default again
    assert api.delete("/tiers/gold", headers=admin).status_code == 204
    assert api.get("/tiers/gold", headers=admin).status_code == 404
    assert api.get("/tiers", headers=admin).json() == {"tiers": []}


@pytest.mark.parametrize("method, path, body", [
    ("put", "/tiers/bad%20name", {"limit": 1}), ("put", "/tiers/" + "x" * 33, {"limit": 1}),
    ("put", "/tiers/.x", {"limit": 1}),
    ("put", "/tiers/gold", {"limit": -1}), ("put", "/tiers/gold", {"limit": 1, "extra": 1}),
    ("put", "/tiers/gold", {"limit": 1, "types": [{"request_type": "a", "limit": 1}] * 2}),
    ("put", "/limits/tier:gold", {"limit": 1}), ("put", "/limits/member:alice", {"limit": 1}),
])
def test_gateway_bad_tier_input_is_422(api, method, path, body):
    answer = getattr(api, method)(path, json=body, headers=api.key_for("admin"))
    assert answer.status_code == 422 and isinstance(answer.json()["detail"], list), answer.text


def test_tier_routes_are_in_the_openapi_document(api):
    document = api.get("/openapi.json").json()
    assert {"/tiers", "/tiers/{name}", "/tiers/{name}/members/{user_id}"} <= set(document["paths"])
    assert set(document["paths"]["/tiers/{name}"]) == {"get", "put", "delete"}
    assert "types" in document["components"]["schemas"]["TierBody"]["properties"]


def test_the_governing_policy_of_a_tier_decision(api):
    admin = api.key_for("admin")
    api.put("/tiers/gold", json={"limit": 10, "window": 60, "types": [{"request_type": "t", "limit": 10}]},
            headers=admin)
    api.put("/tiers/gold/members/client-1", headers=admin)
    api.gateway.verdicts = [decision(user_id="client-1", verdict="throttle", reason="rate_limited_tier_type",
                                     limit=10, count=10, remaining=0, retry_after=5.0)]
    answer = api.post("/requests", json={"request_type": "t"}, headers=api.key_for("client"))
    assert answer.status_code == 429
    assert answer.headers["RateLimit-Policy"] == '"tier";q=10;w=60, "tier_type";q=10;w=60'
    assert answer.headers["RateLimit"].startswith('"tier_type";r=0')


def test_tier_records_file_reads_limits_and_members_and_names_a_bad_line(tmp_path):
    from ratewarden.tiers_cli import read_tier_records

    path = tmp_path / "tiers.jsonl"
    path.write_text('{"tier": "gold", "limit": 5}\n\n{"user_id": "u1", "tier": "gold"}\n')
    limits, members = read_tier_records(path)
    assert [(x.tier, x.limit) for x in limits] == [("gold", 5)] and [(m.user_id, m.tier) for m in members] == [("u1", "gold")]
    path.write_text('{"tier": "gold", "limit": 5}\n{"user_id": "u2", "tier": "no/slash"}\n')
    with pytest.raises(ValueError, match="tiers.jsonl:2: not a tier limit or membership"):
        read_tier_records(path)
