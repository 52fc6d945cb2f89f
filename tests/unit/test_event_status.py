"""The optional ``status`` of a request event: on the wire, through the intake, into every decision,
and through the gateway's request bodies."""

import json
import struct

import msgspec
import pytest
from gateway_fakes import api_client

from agents.intake import EventDecoder, Rejection
from agents.policy import Rule, decide, decide_fixed
from agents.strategies.registry import STRATEGIES
from schemas.decisions import Decision
from schemas.events import RequestEvent
from streams.history import Decided, HistoryEntry, HistoryStore

NOW = 1_732_900_020.0
BEFORE = b'{"request_id":"r1","user_id":"u1","ip":"203.0.113.7","request_type":"login","ts":1732900000.125}'
BAD_STATUSES = [42, 99, 600, 1000, -1, "x", "401", 401.0, True, [401]]


def event(status: int | None = None, rid: str = "r1", ts: float = NOW) -> RequestEvent:
    return RequestEvent(rid, "u1", "203.0.113.7", "login", ts, status)


def with_status(raw: bytes, value: object) -> bytes:
    return raw[:-1] + b',"status":' + json.dumps(value).encode() + b"}"


# --- the event on the wire ---------------------------------------------------------------------------


def test_an_event_without_status_decodes_and_encodes_byte_identically_to_before():
    decoded = msgspec.json.decode(BEFORE, type=RequestEvent)
    assert decoded.status is None
    assert msgspec.json.encode(decoded) == BEFORE
    assert b"status" not in msgspec.json.encode(RequestEvent("r1", "u1", "203.0.113.7", "login", 1.0))


@pytest.mark.parametrize("status", [100, 200, 401, 429, 599])
def test_an_event_with_status_round_trips(status):
    raw = with_status(BEFORE, status)
    decoded = msgspec.json.decode(raw, type=RequestEvent)
    assert decoded.status == status
    assert msgspec.json.encode(decoded) == raw
    assert msgspec.json.decode(msgspec.json.encode(event(status)), type=RequestEvent) == event(status)


@pytest.mark.parametrize("status", BAD_STATUSES)
def test_a_status_out_of_range_or_not_an_integer_is_refused_naming_the_field(status):
    with pytest.raises(msgspec.ValidationError, match=r"\$\.status"):
        msgspec.json.decode(with_status(BEFORE, status), type=RequestEvent)


# --- decisions ---------------------------------------------------------------------------------------


def test_a_decision_without_status_encodes_exactly_as_before_the_field_existed():
    decision, _ = decide_fixed(event(), Rule("u1", 10, 60.0), None, NOW + 0.5)
    encoded = msgspec.json.encode(decision)
    assert b"status" not in encoded
    assert list(msgspec.json.decode(encoded)) == list(Decision.__struct_fields__[:-1])  # same keys, same order
    assert msgspec.json.decode(encoded, type=Decision) == decision
    with_one = msgspec.json.encode(msgspec.structs.replace(decision, status=401))
    assert with_one == encoded[:-1] + b',"status":401}'


@pytest.mark.parametrize("algorithm", sorted(STRATEGIES))
@pytest.mark.parametrize("status", [None, 401])
def test_every_algorithm_copies_the_status_into_allow_throttle_and_shadow_decisions(algorithm, status):
    burst = 0 if algorithm == "gcra" else None
    for shadow in (False, True):
        rules = [Rule("u1", 2, 60.0, algorithm, shadow=shadow, burst=burst)]
        states, verdicts = [None], []
        for i in range(4):
            decision, states = decide(event(status, f"r{i}", NOW + i * 0.01), rules, states, None, NOW + 1)
            assert decision.status == status and decision.request_id == f"r{i}"
            verdicts.append((decision.verdict, decision.shadow))
        assert (("allow", True) if shadow else ("throttle", False)) in verdicts, verdicts


@pytest.mark.parametrize("status", [None, 403])
def test_the_fixed_fast_path_copies_the_status_for_allow_throttle_shadow_and_block(status):
    for shadow in (False, True):
        rule = Rule("u1", 1, 60.0, shadow=shadow)
        first, counter = decide_fixed(event(status, "r0"), rule, None, NOW)
        second, counter = decide_fixed(event(status, "r1"), rule, counter, NOW)
        assert first.verdict == "allow" and second.verdict == ("allow" if shadow else "throttle")
        assert first.status == second.status == status
        # the fast path and the general one agree, status included
        assert decide(event(status, "r1"), [rule], [counter], None, NOW)[0] == second
    blocked, _ = decide_fixed(event(status), Rule("u1", 10, 60.0), None, NOW, "ip_blocked")
    assert blocked.verdict == "block" and blocked.status == status


@pytest.mark.parametrize("status", [None, 401])
def test_a_blocked_request_keeps_its_status_with_any_rules_or_none(status):
    for rules in ([], [Rule("u1", 5, 60.0, "sliding")], [Rule("u1", 5, 60.0, "gcra", burst=1)],
                  [Rule("u1", 5, 60.0), Rule("u1:login", 1, 60.0, scope="type")]):
        decision, _ = decide(event(status), rules, [None] * len(rules), "user_blocked", NOW)
        assert decision.verdict == "block" and decision.status == status


# --- intake ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", BAD_STATUSES)
def test_the_intake_dead_letters_a_bad_status_and_the_reason_names_it(status):
    rejection = EventDecoder().decode(with_status(BEFORE, status), NOW)
    assert type(rejection) is Rejection
    assert rejection.reason == "invalid_field" and "$.status" in rejection.detail, rejection


def test_the_intake_keeps_good_events_with_and_without_status():
    decoder = EventDecoder()
    assert decoder.decode(BEFORE, NOW) == msgspec.json.decode(BEFORE, type=RequestEvent)
    assert decoder.decode(with_status(BEFORE, 401), NOW).status == 401
    assert decoder.decode(with_status(BEFORE, None), NOW).status is None  # null: the same as absent


# --- the gateway's request bodies --------------------------------------------------------------------


@pytest.fixture
def api():
    yield from api_client(gateway_batch_max_items=4, gateway_batch_max_body_bytes=1024)


def test_a_service_key_submits_a_status_and_it_reaches_the_event(api):
    service = api.key_for("service")
    answer = api.post("/requests", json={"request_type": "login", "user_id": "u1", "status": 401}, headers=service)
    assert answer.status_code == 200, answer.text
    answer = api.post("/requests", json={"request_type": "login", "user_id": "u1"}, headers=service)
    assert answer.status_code == 200, answer.text
    items = [{"request_type": "login", "user_id": "u2", "status": 200}, {"request_type": "read", "user_id": "u2"}]
    entries = api.post("/requests/batch", json={"requests": items}, headers=service).json()["decisions"]
    assert [e["code"] for e in entries] == [200, 200]
    assert [(e.user_id, e.status) for e in api.gateway.events] == [("u1", 401), ("u1", None), ("u2", 200), ("u2", None)]
    assert b"status" not in msgspec.json.encode(api.gateway.events[1])


@pytest.mark.parametrize("status", BAD_STATUSES)
def test_a_bad_status_is_422_naming_the_field(api, status):
    admin = api.key_for("admin")
    answer = api.post("/requests", json={"request_type": "login", "status": status}, headers=admin)
    assert answer.status_code == 422, answer.text
    (detail,) = answer.json()["detail"]
    assert detail["loc"] == ["body", "status"] and detail["msg"], detail
    items = [{"request_type": "login", "status": status}, {"request_type": "login", "status": 401}]
    bad, good = api.post("/requests/batch", json={"requests": items}, headers=admin).json()["decisions"]
    assert bad["code"] == 422 and bad["detail"].startswith("status:"), bad
    assert good["code"] == 200
    assert [e.status for e in api.gateway.events] == [401]


def test_only_service_and_admin_keys_may_report_a_status(api):
    answer = api.post("/requests", json={"request_type": "login", "status": 200}, headers=api.key_for("client"))
    assert answer.status_code == 403 and "status" in answer.json()["detail"]
    assert api.gateway.events == []


def test_the_openapi_document_shows_the_status_of_both_bodies(api):
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    status = schemas["SubmitBody"]["properties"]["status"]
    (number, null) = status["anyOf"]
    assert number == {"type": "integer", "minimum": 100, "maximum": 599, "examples": [401]} and null == {"type": "null"}
    assert "status" not in schemas["SubmitBody"].get("required", [])
    assert schemas["BatchBody"]["properties"]["requests"]["items"] == {"$ref": "#/components/schemas/SubmitBody"}


# --- the history of GET /requests/{user_id} ----------------------------------------------------------


def test_the_history_keeps_a_status_where_given_and_reads_runs_written_before_statuses(tmp_path):
    store = HistoryStore(tmp_path / "h", max_count=100, max_age=3600)
    try:
        # a run as the former code wrote it (six fields per entry), then decisions with and without status
        old = [(NOW, "r0", "read", "203.0.113.7", "allow", "within_limit")]
        store._db[b"u1\x00" + struct.pack(">d", NOW) + b"r0"] = msgspec.msgpack.encode(old)
        decided = [Decided("r1", "u1", "203.0.113.7", "login", "allow", "within_limit", NOW + 1, 401),
                   Decided("r2", "u1", "203.0.113.7", "read", "allow", "within_limit", NOW + 2)]
        store.apply(decided, 3)
        fed, _ = decide_fixed(event(429, "r3", NOW + 3), Rule("u1", 10, 60.0), None, NOW + 3)
        store.apply([fed, decided[0]], 4)  # a Decision fed in process; r1 delivered twice: merged into its run
        page, more = store.page("u1", 10)
        assert more is None
        assert [(e.request_id, e.status) for e in page] == [("r3", 429), ("r2", None), ("r1", 401), ("r0", None)]
        assert page[1] == HistoryEntry(NOW + 2, "r2", "read", "203.0.113.7", "allow", "within_limit")
        assert b"status" not in msgspec.json.encode(page[1]) and b'"status":401' in msgspec.json.encode(page[2])
    finally:
        store.close()


def test_a_history_item_shows_status_only_where_the_request_had_one(api, monkeypatch):
    items = [{"ts": NOW + 1, "request_id": "r1", "request_type": "login", "ip": "203.0.113.7", "verdict": "allow",
              "reason": "within_limit", "status": 401},
             {"ts": NOW, "request_id": "r0", "request_type": "read", "ip": "203.0.113.7", "verdict": "allow",
              "reason": "within_limit"}]

    async def read(user_id, limit, before):
        return {"user_id": user_id, "partition": 0, "requests": items, "next_before": None}

    monkeypatch.setattr(api.gateway.history, "read", read)
    answer = api.get("/requests/u1", headers=api.key_for("admin"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"user_id": "u1", "requests": items, "next_before": None}
    item = api.get("/openapi.json").json()["components"]["schemas"]["HistoryItem"]
    assert "status" in item["properties"] and "status" not in item["required"]
