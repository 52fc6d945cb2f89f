"""The gateway without Kafka: partitioning, headers, client IPs, keys, the history store, and the HTTP layer."""

import math
import random

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner as AioPartitioner
from gateway_fakes import api_client, decision
from kafka.partitioner import DefaultPartitioner as KafkaPythonPartitioner

from ratewarden.gateway.auth import UserBook, hash_key, new_user
from ratewarden.gateway.net import ClientIp, normalize_ip
from ratewarden.gateway.routes.requests import rate_headers
from ratewarden.gateway.runtime import Clock
from schemas.decisions import Decision
from streams.history import HistoryStore, partition_for


class _Cluster:
    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self):
        return {"t"}

    def partitions_for_topic(self, topic):
        return set(range(self.n))

    def available_partitions_for_topic(self, topic):
        return set(range(self.n))


def test_partition_for_agrees_with_the_default_partitioners_of_both_kafka_clients():
    rng = random.Random(3)
    keys = ["alice", "bob", "", "ü-nicode", "user-00042"] + [f"u{rng.getrandbits(64):x}" for _ in range(500)]
    for n in (1, 2, 3, 4, 7, 12, 64):
        all_partitions = list(range(n))
        for key in keys:
            expected = partition_for(key, n)
            assert AioPartitioner()(key.encode(), all_partitions, all_partitions) == expected
            assert KafkaPythonPartitioner().partition("t", key, key.encode(), None, None, _Cluster(n)) == expected


def test_ratelimit_headers_follow_the_ietf_draft():
    assert rate_headers(decision()) == {"RateLimit-Policy": '"default";q=10;w=60', "RateLimit": '"default";r=7;t=43'}
    assert rate_headers(decision(ts_event=1259.999, remaining=0))["RateLimit"] == '"default";r=0;t=1'
    assert rate_headers(decision(window_start=0.0, reset_at=0.5, ts_event=0.25))["RateLimit-Policy"].endswith("w=1")


def test_client_ip_uses_forwarded_for_only_behind_trusted_proxies():
    plain = ClientIp("")
    assert plain("198.51.100.1", ["192.0.2.1"]) == "198.51.100.1"
    proxied = ClientIp("10.0.0.0/8, 127.0.0.1")
    assert proxied("10.1.2.3", ["192.0.2.1, 10.9.9.9"]) == "192.0.2.1"
    assert proxied("10.1.2.3", ["203.0.113.5, 192.0.2.1"]) == "192.0.2.1"  # the left part is the client's word
    assert proxied("10.1.2.3", ["192.0.2.1", "10.2.2.2"]) == "192.0.2.1"  # several headers
    assert proxied("10.1.2.3", ["garbage, 10.2.2.2"]) == "10.2.2.2"
    assert proxied("198.51.100.1", ["192.0.2.1"]) == "198.51.100.1"  # an untrusted peer cannot forward
    assert proxied("10.1.2.3", []) == "10.1.2.3"
    assert plain("testclient", []) == "0.0.0.0" and plain(None, []) == "0.0.0.0"
    assert normalize_ip("::ffff:192.0.2.1") == "192.0.2.1" and normalize_ip("2001:DB8::0:1") == "2001:db8::1"


def test_keys_are_stored_as_hashes_and_revoked_by_a_tombstone():
    user, key = new_user("alice", "client", 1.0)
    assert key not in msgspec.json.encode(user).decode() and user.key_hash == hash_key(key)
    book = UserBook()
    book.apply(b"alice", msgspec.json.encode(user))
    assert book.authenticate(key) == user and book.authenticate(key + "x") is None
    rotated, new_key = new_user("alice", "admin", 2.0)
    book.apply(b"alice", msgspec.json.encode(rotated))
    assert book.authenticate(key) is None and book.authenticate(new_key).role == "admin"
    book.apply(b"alice", None)
    assert book.authenticate(new_key) is None and len(book) == 0
    with pytest.raises(ValueError):
        new_user("has space", "client", 1.0)


def test_clock_is_strictly_increasing():
    clock = Clock(lambda: 100.0)
    assert [clock() for _ in range(3)] == [100.0, 100.000001, 100.000002]


def _decisions(user: str, times: list[float], prefix: str = "r") -> list[Decision]:
    return [decision(request_id=f"{prefix}{i}", user_id=user, ts_event=ts) for i, ts in enumerate(times)]


def test_history_store_orders_bounds_pages_and_survives_a_reopen(tmp_path):
    store = HistoryStore(tmp_path / "p0", max_count=5, max_age=100.0)
    store.apply(_decisions("a", [10.0, 12.0, 11.0]) + _decisions("b", [10.5]), position=4)
    assert [e.request_id for e in store.page("a", 10)[0]] == ["r1", "r2", "r0"]  # by event time, newest first
    store.apply(_decisions("a", [12.0, 13.0, 14.0, 15.0], prefix="s") + _decisions("a", [10.0]), position=9)  # r0 again
    entries, next_before = store.page("a", 10)
    assert [e.request_id for e in entries] == ["s3", "s2", "s1", "s0", "r1"]  # count bound 5, duplicate skipped
    assert next_before is None
    pages, before = [], None
    while True:  # pages of 2 never split the two requests at 12.0
        entries, before = store.page("a", 2, before)
        pages.append([e.request_id for e in entries])
        if before is None:
            break
    assert pages == [["s3", "s2"], ["s1"], ["s0", "r1"]]
    assert [e.request_id for e in store.page("a", 1, 13.0)[0]] == ["s0", "r1"]  # one time, more than the limit
    store.close()

    reopened = HistoryStore(tmp_path / "p0", max_count=5, max_age=100.0)
    assert reopened.position == 9 and reopened.watermark == 15.0
    assert [e.request_id for e in reopened.page("a", 10)[0]] == ["s3", "s2", "s1", "s0", "r1"]
    reopened.apply(_decisions("c", [113.0]), position=10)  # the watermark moves: b and part of a age out
    assert [e.request_id for e in reopened.page("a", 10)[0]] == ["s3", "s2", "s1"]
    assert reopened.page("b", 10) == ([], None)
    assert reopened.sweep() == 3  # b's entry and a's two at 12.0 are older than the retention
    assert [e.request_id for e in reopened.page("a", 10)[0]] == ["s3", "s2", "s1"]
    reopened.wipe()
    assert reopened.position is None and reopened.page("c", 10) == ([], None)
    reopened.close()


def test_history_store_keeps_the_count_bound_for_readers_and_on_disk(tmp_path):
    store = HistoryStore(tmp_path / "p1", max_count=3, max_age=1e9)
    for i in range(10):
        store.apply(_decisions("a", [float(i)], prefix=f"x{i}-"), position=i + 1)
    assert [e.ts for e in store.page("a", 10)[0]] == [9.0, 8.0, 7.0]
    assert sum(1 for key in store._db.keys() if key.startswith(b"a\x00")) <= 6
    store.close()


@pytest.fixture
def api():
    yield from api_client()


def test_answers_for_each_verdict_and_for_no_decision(api):
    gw, admin = api.gateway, api.key_for("admin")
    gw.verdicts = [
        decision(verdict="throttle", reason="rate_limited", remaining=0, retry_after=2.0001),
        decision(verdict="block", reason="ip_blocked"),
        decision(shadow=True, reason="shadow:rate_limited"),
        None,
    ]
    throttled, blocked, shadow, nothing = (api.post("/requests", json={"request_type": "x"}, headers=admin) for _ in range(4))
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    assert throttled.json() == {"status": "throttled", "request_id": "q0", "reason": "rate_limited", "retry_after": 2.0001}
    assert blocked.status_code == 403 and blocked.json() == {"status": "blocked", "request_id": "q1", "reason": "ip_blocked"}
    assert blocked.headers["RateLimit"] == '"default";r=7;t=43'
    assert shadow.json() == {"status": "ok", "request_id": "q2", "shadow": True, "fail_open": False}
    assert nothing.status_code == 200 and nothing.json()["fail_open"] is True
    assert nothing.headers["Ratewarden-Fail-Open"] == "true" and nothing.headers["RateLimit-Policy"] == '"default";q=50;w=60'
    assert "RateLimit" not in nothing.headers


def test_submitting_on_behalf_is_for_service_keys_and_the_ip_is_normalized(api):
    on_behalf = {"request_type": "x", "user_id": "end-user", "ip": "::ffff:198.51.100.4"}
    assert api.post("/requests", json=on_behalf, headers=api.key_for("service")).status_code == 200
    assert api.gateway.events[-1].user_id == "end-user" and api.gateway.events[-1].ip == "198.51.100.4"
    assert api.post("/requests", json=on_behalf, headers=api.key_for("client")).status_code == 403
    api.post("/requests", json={"request_type": "x"}, headers=api.key_for("client"))
    assert api.gateway.events[-1].user_id == "client-1" and api.gateway.events[-1].ip == "0.0.0.0"  # TestClient peer


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("post", "/requests", {"request_type": "x", "surprise": True}),
        ("post", "/requests", {"request_type": ""}),
        ("post", "/requests", {"request_type": "tab\there"}),
        ("post", "/requests", {"request_type": "x", "user_id": "a/b"}),
        ("post", "/requests", [1, 2]),
        ("put", "/limits/u", {"limit": -1}),
        ("put", "/limits/u", {"limit": 1.5}),
        ("put", "/limits/u", {"limit": 1, "window": 0}),
        ("put", "/limits/u", {"limit": 1, "algorithm": "leaky"}),
        ("put", "/limits/" + "x" * 129, {"limit": 1}),
        ("put", "/blocklist/1.2.3.4.5", {}),
        ("put", "/blocklist/fe80::1%25eth0", {}),
        ("put", "/blocklist/192.0.2.1", {"ttl": -5}),
        ("post", "/users", {"user_id": "x y", "role": "client"}),
        ("get", "/requests/u?limit=0", None),
        ("get", "/requests/u?before=-1", None),
        ("get", "/requests/u?before=inf", None),
        ("get", "/limits/u?request_type=", None),
    ],
)
def test_bad_input_is_422_with_a_message(api, method, path, body):
    answer = api.request(method.upper(), path, json=body, headers=api.key_for("admin"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["msg"]


def test_non_finite_numbers_are_rejected(api):
    answer = api.put("/limits/u", content=b'{"limit": 1, "window": NaN}', headers=api.key_for("admin") | {"Content-Type": "application/json"})
    assert answer.status_code == 422


def test_bodies_over_the_limit_are_413_whether_announced_or_streamed(api):
    big = {"request_type": "x" * 2000}
    assert api.post("/requests", json=big, headers=api.key_for("admin")).status_code == 413
    streamed = api.post("/requests", content=iter([b'{"request_type": "', b"y" * 2000, b'"}']),
                        headers=api.key_for("admin") | {"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "1024 bytes" in streamed.json()["detail"]
    assert api.post("/requests", json=big).status_code == 413  # before authentication: nothing is read


def test_admin_writes_are_read_back_at_once(api):
    admin = api.key_for("admin")
    assert api.put("/limits/u", json={"limit": 3, "window": 10}, headers=admin).status_code == 200
    assert api.get("/limits", headers=admin).json()["limits"] == [
        {"user_id": "u", "limit": 3, "window": 10.0, "request_type": None, "algorithm": "fixed", "shadow": False,
         "burst": None}
    ]
    entry = api.put("/blocklist/2001:DB8::1", json={"ttl": 30}, headers=admin).json()
    assert entry["subject"] == "2001:db8::1" and math.isclose(entry["expires_at"] - entry["start"], 30)
    assert api.delete("/blocklist/2001:db8::1", headers=admin).status_code == 204
    assert api.delete("/blocklist/2001:db8::1", headers=admin).status_code == 404
    created = api.post("/users", json={"user_id": "new", "role": "analyst"}, headers=admin).json()
    assert api.get("/blocklist", headers={"Authorization": f"Bearer {created['api_key']}"}).status_code == 200
