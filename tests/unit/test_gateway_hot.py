"""The hot routes (POST /requests and POST /requests/batch) on a gateway without Kafka."""

import pytest
from fastapi.testclient import TestClient
from gateway_fakes import api_client, decision

from ratewarden.gateway.hot import HotRoutes

THROTTLED = decision(verdict="throttle", reason="rate_limited", remaining=0, retry_after=2.0001)


@pytest.fixture
def api():
    yield from api_client(gateway_batch_max_items=4, gateway_batch_max_body_bytes=512)


def test_a_batch_answers_each_item_in_order_and_a_bad_item_does_not_fail_the_rest(api):
    api.gateway.verdicts = [decision(), THROTTLED, decision(verdict="block", reason="ip_blocked")]
    items = [{"request_type": "a", "user_id": "u1"}, {"request_type": 5}, {"request_type": "b", "ip": "::ffff:192.0.2.9"},
             {"request_type": "c", "user_id": "u3", "ip": "999.1.1.1"}]
    answer = api.post("/requests/batch", json={"requests": items[:2] + items[2:]}, headers=api.key_for("service"))
    assert answer.status_code == 200, answer.text
    ok, bad, throttled, bad_ip = answer.json()["decisions"]
    # decided under 10 per 60 s (the gateway's copy says 50): the fields show the decision's numbers
    assert ok == {"status": "ok", "request_id": "q0", "shadow": False, "fail_open": False, "code": 200,
                  "ratelimit_policy": '"default";q=10;w=60', "ratelimit": '"default";r=7;t=43'}
    assert bad["status"] == "invalid" and bad["code"] == 422 and bad["detail"].startswith("request_type:")
    assert throttled | {"request_id": "-"} == {
        "status": "throttled", "request_id": "-", "reason": "rate_limited", "retry_after": 2.0001, "code": 429,
        "ratelimit_policy": '"default";q=10;w=60', "ratelimit": '"default";r=0;t=43', "retry_after_header": "3"}
    assert bad_ip["code"] == 422 and "999.1.1.1" in bad_ip["detail"] and bad_ip["detail"].startswith("ip:")
    assert [(e.user_id, e.ip, e.request_type) for e in api.gateway.events] == [
        ("u1", "0.0.0.0", "a"), ("service-1", "192.0.2.9", "b")]  # the TestClient peer is no IP: 0.0.0.0


def test_client_keys_may_not_speak_for_others_item_by_item(api):
    items = [{"request_type": "a"}, {"request_type": "b", "user_id": "someone"}]
    entries = api.post("/requests/batch", json={"requests": items}, headers=api.key_for("client")).json()["decisions"]
    assert [e["code"] for e in entries] == [200, 403]
    assert entries[1] == {"status": "forbidden", "code": 403, "detail": "only service and admin keys may set user_id, ip or status"}
    assert api.gateway.events[-1].user_id == "client-1"


def test_no_decision_in_a_batch_is_the_fail_mode_answer(api):
    api.gateway.verdicts = [None]
    (entry,) = api.post("/requests/batch", json={"requests": [{"request_type": "a"}]},
                        headers=api.key_for("admin")).json()["decisions"]
    assert entry | {"request_id": "-"} == {"status": "ok", "request_id": "-", "shadow": False, "fail_open": True,
                                           "code": 200, "ratelimit_policy": '"default";q=50;w=60'}


@pytest.mark.parametrize("body", [
    {"requests": []}, {"requests": [{"request_type": "a"}] * 5}, {"requests": {"request_type": "a"}}, [1],
    {"requests": [{"request_type": "a"}], "more": 1}, {},
])
def test_a_batch_body_of_the_wrong_shape_is_422_as_a_whole(api, body):
    answer = api.post("/requests/batch", json=body, headers=api.key_for("admin"))
    assert answer.status_code == 422 and answer.json()["detail"][0]["msg"], answer.text
    assert api.gateway.events == []


def test_batch_size_limit_authentication_and_roles(api):
    big = {"requests": [{"request_type": "x" * 60, "user_id": "u" * 100}] * 4}
    assert api.post("/requests/batch", json=big, headers=api.key_for("admin")).status_code == 413
    assert api.post("/requests", json={"request_type": "x" * 60, "user_id": "u" * 100, "ip": "1.2.3.4"},
                    headers=api.key_for("admin")).status_code == 200  # the single route has its own limit
    missing = api.post("/requests/batch", json={"requests": [{"request_type": "a"}]})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    refused = api.post("/requests/batch", json={"requests": [{"request_type": "a"}]}, headers=api.key_for("analyst"))
    assert refused.status_code == 403 and refused.json()["detail"].startswith("role 'analyst' may not do this")


def test_hot_answers_are_plain_json_with_the_rate_fields(api):
    answer = api.post("/requests", json={"request_type": "a"}, headers=api.key_for("client"))
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert answer.headers["RateLimit"] == '"default";r=7;t=43'
    not_utf8 = api.post("/requests", content=b'{"request_type": "\xff"}', headers=api.key_for("client"))
    assert not_utf8.status_code == 400 and not_utf8.json()["detail"]
    form = api.post("/requests", data={"request_type": "a"}, headers=api.key_for("client"))
    assert form.status_code == 422


def test_the_fastapi_declarations_document_both_routes_and_answer_alike(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths["/requests/batch"]["post"]["responses"]) >= {"200", "401", "403", "413", "422", "429"}
    assert "RateLimit-Policy" in paths["/requests"]["post"]["responses"]["200"]["headers"]
    app = api.app
    assert isinstance(app, HotRoutes)
    with TestClient(app.app) as inner:  # FastAPI alone, without the hot routes in front
        api.gateway.verdicts = [THROTTLED, decision()]
        single = inner.post("/requests", json={"request_type": "a"}, headers=api.key_for("client"))
        batch = inner.post("/requests/batch", json={"requests": [{"request_type": "a"}]}, headers=api.key_for("client"))
    assert single.status_code == 429 and single.headers["Retry-After"] == "3"
    assert batch.json()["decisions"][0]["code"] == 200
