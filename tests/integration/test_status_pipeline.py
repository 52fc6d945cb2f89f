"""The optional ``status`` of request events through real workers and the gateway: decisions carry it,
and only when the event had one; a bad one is a dead letter naming it."""

import json

import msgspec
import pytest

from ratewarden.client import RequestPublisher, read_topic_records
from ratewarden.control import block, set_limits
from ratewarden.gateway.testing import GatewayStack
from schemas.events import DeadLetter, RequestEvent
from schemas.limits import BlocklistEntry, RateLimit

pytestmark = pytest.mark.kafka

TA = 1_732_899_960.0  # a multiple of 60: the start of a window
USERS = {"fixed": "st-fixed", "sliding": "st-sliding", "gcra": "st-gcra"}


def test_decisions_carry_the_status_of_their_event_for_every_algorithm_and_block(make_pipeline):
    pipeline = make_pipeline()
    set_limits([RateLimit(user_id=USERS["fixed"], limit=2, window=60.0),
                RateLimit(user_id=USERS["sliding"], limit=2, window=60.0, algorithm="sliding"),
                RateLimit(user_id=USERS["gcra"], limit=2, window=60.0, algorithm="gcra", burst=1)], pipeline.settings)
    block(BlocklistEntry(subject="st-banned", kind="user", reason="test"), pipeline.settings)
    pipeline.start_worker()
    statuses = [401, None, 200, None]  # the limit of 2 (GCRA: 1 + burst 1) throttles the last two
    events = [RequestEvent(f"{name}-{i}", user, "203.0.113.7", "login", TA + i, status)
              for name, user in USERS.items() for i, status in enumerate(statuses)]
    events += [RequestEvent("banned-0", "st-banned", "203.0.113.8", "login", TA, 403),
               RequestEvent("banned-1", "st-banned", "203.0.113.8", "login", TA + 1)]
    with RequestPublisher(pipeline.settings) as publisher:  # a bad status is a dead letter, the rest goes on
        bad = {"request_id": "bad", "user_id": "st-fixed", "ip": "203.0.113.7", "request_type": "login", "ts": TA,
               "status": 42}
        publisher.publish_raw(b"bad-status", json.dumps(bad).encode())
    decisions = pipeline.replay(events)

    assert [d.request_id for d in decisions] == [e.request_id for e in events]
    assert [d.status for d in decisions] == [e.status for e in events]
    for name in USERS:
        assert [d.verdict for d in decisions if d.request_id.startswith(name)] == ["allow", "allow", "throttle",
                                                                                   "throttle"], name
    assert [(d.verdict, d.reason) for d in decisions[-2:]] == [("block", "user_blocked")] * 2
    raw = {msgspec.json.decode(r.value)["request_id"]: r.value
           for r in pipeline.read_topic(pipeline.settings.decisions_topic)}
    assert set(raw) == {e.request_id for e in events}  # not "bad"
    for event in events:  # on the topic: the key only when the event had a status
        assert (b'"status":' in raw[event.request_id]) == (event.status is not None), raw[event.request_id]

    letters = pipeline.read_topic(pipeline.settings.dead_letter_topic)
    (letter,) = [msgspec.json.decode(r.value, type=DeadLetter) for r in letters]
    assert letter.reason == "invalid_field" and "$.status" in letter.detail, letter


def test_the_gateway_passes_a_status_to_the_decision_and_the_history(kafka_bootstrap, tmp_path):
    with GatewayStack(kafka_bootstrap, tmp_path, default_limit=100, default_window=3600) as stack:
        with stack.client("service") as service, stack.client("admin") as admin:
            given = service.post("/requests", json={"request_type": "login", "user_id": "st-gw", "status": 401})
            absent = service.post("/requests", json={"request_type": "read", "user_id": "st-gw"})
            batch = service.post("/requests/batch", json={"requests": [
                {"request_type": "login", "user_id": "st-gw", "status": 200},
                {"request_type": "login", "user_id": "st-gw"},
                {"request_type": "login", "user_id": "st-gw", "status": 600}]})
            refused = service.post("/requests", json={"request_type": "login", "user_id": "st-gw", "status": "x"})
            history = admin.get("/requests/st-gw").json()["requests"]
        topic = read_topic_records(stack.settings, stack.settings.decisions_topic)
        records = [msgspec.json.decode(r.value) for r in topic]

    assert given.status_code == absent.status_code == 200, (given.text, absent.text)
    entries = batch.json()["decisions"]
    assert [e["code"] for e in entries] == [200, 200, 422] and entries[2]["detail"].startswith("status:"), entries
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "status"], refused.text
    wanted = {given.json()["request_id"]: 401, absent.json()["request_id"]: None,
              entries[0]["request_id"]: 200, entries[1]["request_id"]: None}
    seen = {item["request_id"]: item.get("status") for item in history}
    assert seen == wanted, history
    assert all(("status" in item) == (item["request_id"] in (given.json()["request_id"], entries[0]["request_id"]))
               for item in history), history
    assert {r["request_id"]: r.get("status") for r in records if r["request_id"] in wanted} == wanted
