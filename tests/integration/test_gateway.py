"""The HTTP gateway against the real broker, a `ratewarden worker` process and the gateway on loopback."""

import asyncio
import functools
import math
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import msgspec
import pytest

from ratewarden.gateway.routes import reports as reports_route
from ratewarden.gateway.server import GatewayThread
from ratewarden.gateway.headers import USER
from ratewarden.gateway import testing
from ratewarden.gateway.testing import GatewayStack
from ratewarden.processes import stop_process
from schemas.flags import AbuseReport, Population, ReportedIp

pytestmark = pytest.mark.kafka

IP = "203.0.113.9"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    with GatewayStack(kafka_bootstrap, tmp_path_factory.mktemp("gateway")) as stack:
        yield stack


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def submit(client: httpx.Client, user_id: str, ip: str = IP, request_type: str = "read") -> httpx.Response:
    return client.post("/requests", json={"request_type": request_type, "user_id": user_id, "ip": ip})


def structured(header: str) -> dict[str, str]:
    """The parameters of a one-item structured-field list (`"name";k=v;...`), with the name under ``""``."""
    name, *params = header.split(";")
    return {"": name, **dict(p.split("=", 1) for p in params)}


#: ``probe()``'s first true result, polled every 50 ms for at most 15 s.
wait_until = functools.partial(testing.wait_until, timeout=15.0, interval=0.05)


def away_from_window_edge(window: float, margin: float = 5.0) -> None:
    """Sleep past the next window boundary if it is less than ``margin`` seconds away."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.1)


def test_allowed_throttled_and_blocked_answers_carry_exact_ratelimit_headers(stack):
    user = unique("hdr")
    with stack.client("service") as service, stack.client("admin") as admin:
        assert admin.put(f"/limits/{user}", json={"limit": 3, "window": 3600}).status_code == 200
        wait_until(lambda: structured(submit(service, user, request_type="probe").headers["RateLimit-Policy"])["q"] == "3",
                   what="the new limit at the worker")  # the probe used one of the 3
        away_from_window_edge(3600)
        answers = [submit(service, user) for _ in range(3)]
        history = {h["request_id"]: h for h in admin.get(f"/requests/{user}").json()["requests"]}

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.json()["status"] for a in answers] == ["ok", "ok", "throttled"]
    for answer, remaining in zip(answers, (1, 0, 0)):
        request_id = answer.json()["request_id"]
        ts = history[request_id]["ts"]  # the gateway's clock stamped the event; the history reports it
        reset = (math.floor(ts / 3600) + 1) * 3600
        assert structured(answer.headers["RateLimit-Policy"]) == {"": f'"{USER}"', "q": "3", "w": "3600"}
        assert structured(answer.headers["RateLimit"]) == {"": f'"{USER}"', "r": str(remaining), "t": str(math.ceil(reset - ts))}
    throttled = answers[2]
    assert throttled.json()["reason"] == "rate_limited"
    assert math.isclose(throttled.json()["retry_after"], reset - history[throttled.json()["request_id"]]["ts"], abs_tol=0.002)
    assert throttled.headers["Retry-After"] == str(math.ceil(throttled.json()["retry_after"]))
    assert "Retry-After" not in answers[0].headers

    bad_ip = "198.51.100.23"
    with stack.client("service") as service, stack.client("admin") as admin:
        assert admin.put(f"/blocklist/{bad_ip}", json={"reason": "test", "ttl": 600}).status_code == 200
        blocked = wait_until(lambda: (a := submit(service, unique("victim"), ip=bad_ip)).status_code == 403 and a,
                             what="the blocklist entry at the worker")
        assert blocked.json() | {"request_id": "-"} == {"status": "blocked", "request_id": "-", "reason": "ip_blocked"}
        assert structured(blocked.headers["RateLimit-Policy"])["q"] == "1000"
        assert structured(blocked.headers["RateLimit"])["r"] == "1000"  # blocked requests are not counted
        assert admin.delete(f"/blocklist/{bad_ip}").status_code == 204
        wait_until(lambda: submit(service, unique("victim"), ip=bad_ip).status_code == 200, what="the unblock")


def test_client_ip_comes_from_the_connection_and_client_keys_cannot_speak_for_others(stack):
    with stack.client("client") as client, stack.client("analyst") as analyst:
        answer = client.post("/requests", json={"request_type": "ip-check"}, headers={"X-Forwarded-For": "192.0.2.1"})
        assert answer.status_code == 200
        mine = analyst.get("/requests/client-1", params={"limit": 1}).json()["requests"][0]
        assert (mine["request_id"], mine["ip"]) == (answer.json()["request_id"], "127.0.0.1")  # no trusted proxies
        for body in ({"user_id": "someone"}, {"ip": "192.0.2.1"}):
            refused = client.post("/requests", json={"request_type": "x", **body})
            assert refused.status_code == 403 and "service" in refused.json()["detail"]


def test_limit_put_through_the_api_changes_the_next_decisions_without_restart(stack):
    user = unique("live")
    with stack.client("service") as service, stack.client("admin") as admin:
        assert structured(submit(service, user).headers["RateLimit-Policy"])["q"] == "1000"
        away_from_window_edge(3600, margin=30)
        put = admin.put(f"/limits/{user}", json={"limit": 2, "window": 3600})
        assert put.json() == {"user_id": user, "limit": 2, "window": 3600.0, "request_type": None,
                              "algorithm": "fixed", "shadow": False, "burst": None}
        assert admin.get(f"/limits/{user}").json() == put.json()  # read your write, at once
        assert any(x["user_id"] == user for x in admin.get("/limits").json()["limits"])
        # the worker follows the compacted topic live: within moments every decision uses the new limit
        seen = wait_until(lambda: (a := submit(service, user)).headers["RateLimit-Policy"].endswith("q=2;w=3600") and a,
                          what="the new limit at the worker")
        later = [seen] + [submit(service, user) for _ in range(3)]
        assert all(a.headers["RateLimit-Policy"] == f'"{USER}";q=2;w=3600' for a in later)
        assert later[-1].status_code == 429 and [a.status_code for a in later].count(200) <= 2

        assert admin.delete(f"/limits/{user}").status_code == 204
        assert admin.get(f"/limits/{user}").status_code == 404
        wait_until(lambda: submit(service, user).headers["RateLimit-Policy"].endswith("q=1000;w=60"),
                   what="the default limit back at the worker")

        typed = unique("typed")
        assert admin.put(f"/limits/{typed}", json={"limit": 0, "request_type": "upload"}).status_code == 200
        refused = wait_until(lambda: (a := submit(service, typed, request_type="upload")).json().get("reason")
                             == "rate_limited_type" and a, what="the typed limit at the worker")
        # one policy item per applicable limit; RateLimit names the one that refused
        assert refused.headers["RateLimit-Policy"] == '"default";q=1000;w=60, "type";q=0;w=60'
        assert structured(refused.headers["RateLimit"])[""] == '"type"'
        assert structured(refused.headers["RateLimit"])["r"] == "0"
        assert submit(service, typed, request_type="read").status_code == 200
        assert admin.get(f"/limits/{typed}", params={"request_type": "upload"}).json()["limit"] == 0
        assert admin.delete(f"/limits/{typed}", params={"request_type": "upload"}).status_code == 204


ROLES = ("client", "service", "analyst", "admin")
WHO = ("none", "wrong", *ROLES)


def _matrix():
    """(method, path, body, {who: status}) for every endpoint; `ok` is the status an allowed caller gets."""
    def row(method, path, body=None, allowed=ROLES, ok=200, **special):
        return method, path, body, {"none": 401, "wrong": 401} | {r: (ok if r in allowed else 403) for r in ROLES} | special

    public = {"none": 200, "wrong": 200} | {r: 200 for r in ROLES}
    return [
        row("POST", "/requests", {"request_type": "matrix"}, allowed=("client", "service", "admin")),
        row("GET", "/requests/client-1", allowed=("client", "analyst", "admin")),
        row("GET", "/requests/service-1", allowed=("analyst", "admin")),
        row("GET", "/limits", allowed=("admin",)),
        row("GET", "/limits/nobody", allowed=("admin",), ok=404),
        row("PUT", "/limits/matrix-user", {"limit": 500}, allowed=("admin",)),
        row("DELETE", "/limits/nobody", allowed=("admin",), ok=404),
        row("POST", "/users", {"user_id": "{fresh}", "role": "client"}, allowed=("admin",), ok=201),
        row("GET", "/users/client-1", allowed=("admin",)),
        row("DELETE", "/users/nobody", allowed=("admin",), ok=404),
        row("GET", "/blocklist", allowed=("analyst", "admin")),
        row("PUT", "/blocklist/192.0.2.77", {"reason": "matrix", "ttl": 1}, allowed=("admin",)),
        row("DELETE", "/blocklist/192.0.2.250", allowed=("admin",), ok=404),
        ("GET", "/healthz", None, public),
        row("GET", "/metrics", allowed=("analyst", "admin")),
        row("GET", "/reports/abuse", allowed=("analyst", "admin")),
        ("GET", "/openapi.json", None, public),
    ]


MATRIX = _matrix()


@pytest.mark.parametrize("method,path,body,expected", MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_authorization_matrix(stack, method, path, body, expected):
    keys = {"none": None, "wrong": "rw_" + "x" * 43, **stack.keys}
    got = {}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        for who in WHO:
            headers = {"Authorization": f"Bearer {keys[who]}"} if keys[who] else {}
            json = body and {k: (unique(who) if v == "{fresh}" else v) for k, v in body.items()}
            answer = http.request(method, path, json=json, headers=headers)
            got[who] = answer.status_code
            if answer.status_code == 401:
                assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert got == expected


def test_a_deleted_user_key_stops_working_at_once(stack):
    with stack.client("admin") as admin:
        created = admin.post("/users", json={"user_id": unique("temp"), "role": "analyst"})
        assert created.status_code == 201
        user = created.json()
        assert admin.get(f"/users/{user['user_id']}").json() == {k: user[k] for k in ("user_id", "role", "created_at")}
        assert admin.post("/users", json={"user_id": user["user_id"], "role": "admin"}).status_code == 409
        own = {"Authorization": f"Bearer {user['api_key']}"}
        assert admin.get("/blocklist", headers=own).status_code == 200
        assert admin.delete(f"/users/{user['user_id']}").status_code == 204
        assert admin.get("/blocklist", headers=own).status_code == 401
        assert admin.get(f"/users/{user['user_id']}").status_code == 404


def test_bad_input_is_a_4xx_with_a_message(stack):
    with stack.client("admin") as admin:
        cases = [
            admin.post("/requests", json={"request_type": "x", "extra": 1}),
            admin.post("/requests", json={"request_type": 5}),
            admin.post("/requests", json={"request_type": "x", "ip": "999.1.1.1"}),
            admin.post("/requests", content=b"{not json", headers={"Content-Type": "application/json"}),
            admin.put("/limits/u", json={"limit": "5"}),
            admin.put("/limits/u", json={"limit": 5, "window": 1e9}),
            admin.put("/limits/" + "u" * 500, json={"limit": 5}),
            admin.put("/blocklist/not-an-ip", json={}),
            admin.get("/requests/client-1", params={"limit": 10**9}),
            admin.get("/requests/client-1", params={"before": "nan"}),
            admin.post("/users", json={"user_id": "x", "role": "root"}),
        ]
        assert [c.status_code for c in cases] == [422] * len(cases)
        assert all(c.json()["detail"] for c in cases)
        huge = admin.post("/requests", json={"request_type": "x" * 50_000})
        assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
        chunked = admin.post("/requests", content=iter([b'{"request_type": "', b"y" * 40_000, b'"}']),
                             headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413


def abuse_report(start: float, ip: str, score: float) -> AbuseReport:
    return AbuseReport(
        window_start=start, window_end=start + 60.0, partitions=[0, 1, 2, 3], ips=40, requests=1500, refused=640,
        flagged=[ReportedIp(ip=ip, score=score, rules=["flood", "hammering"], requests=900, users=2, allowlisted=False)],
        population=Population(ips=40, median_requests=6.0, mad_requests=2.0, median_requests_per_user=3.0,
                              mad_requests_per_user=1.0),
        late_partials=1,
    )


def publish(settings, values: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    try:
        for future in [producer.send(settings.abuse_reports_topic, key=k, value=v, partition=0) for k, v in values]:
            future.get(timeout=30)
    finally:
        producer.close()


def test_abuse_reports_are_read_back_newest_first(stack):
    # far-future windows: newer than any the stack's worker reports on its own traffic meanwhile
    base = 3_000_000_000.0 + 60.0 * (uuid.uuid4().int % 10_000)
    older, newer = abuse_report(base, "203.0.113.10", 12.5), abuse_report(base + 60.0, "203.0.113.11", 40.0)
    # the newer window first, then garbage: the order is by window, and a bad record is skipped, not a 500
    publish(stack.settings, [(repr(r.window_start).encode(), msgspec.json.encode(r)) for r in (newer, older)]
            + [(b"bad", b"not json"), (b"bad", b'{"window_start": 1.0}')])
    expected = [msgspec.to_builtins(r) for r in (newer, older)]
    with stack.client("analyst") as analyst, stack.client("admin") as admin:
        answer = analyst.get("/reports/abuse", params={"since": base})
        assert answer.status_code == 200, answer.text
        assert answer.json()["reports"] == expected
        assert answer.json()["skipped"] >= 2
        assert admin.get("/reports/abuse", params={"since": base, "limit": 1}).json()["reports"] == expected[:1]
        assert admin.get("/reports/abuse", params={"since": base + 60.0}).json()["reports"] == expected[:1]
        assert analyst.get("/reports/abuse", params={"since": base + 120.0}).json()["reports"] == []
        latest = analyst.get("/reports/abuse", params={"limit": 2}).json()["reports"]
        assert [r["window_start"] for r in latest] == [base + 60.0, base]
        bad = [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"since": "nan"}, {"since": "inf"}, {"since": -1},
               {"since": 1e12}]
        assert [analyst.get("/reports/abuse", params=p).status_code for p in bad] == [422] * len(bad)


def test_abuse_reports_answer_503_when_kafka_does_not(stack, monkeypatch):
    async def hang(*args):
        await asyncio.sleep(3600)

    monkeypatch.setattr(reports_route, "READ_TIMEOUT", 0.5)
    monkeypatch.setattr(reports_route, "tail_records", hang)  # the gateway runs in this process (a thread)
    with stack.client("analyst") as analyst:
        started = time.monotonic()
        answer = analyst.get("/reports/abuse")
        elapsed = time.monotonic() - started
        assert answer.status_code == 503 and 0.5 <= elapsed < 2.0
        assert "no answer within 0.5 s" in answer.json()["detail"] and answer.headers["Retry-After"] == "1"
        assert analyst.get("/healthz").status_code == 200  # the event loop was never blocked


def test_reading_abuse_reports_from_a_silent_or_absent_broker_is_bounded(stack):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        for bootstrap in (f"127.0.0.1:{silent.getsockname()[1]}", "127.0.0.1:1"):
            settings = stack.settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
            started = time.monotonic()
            with pytest.raises(reports_route.ReportsUnavailable, match="abuse-reports"):
                asyncio.run(reports_route.read_abuse_reports(settings, 10, timeout=1.0))
            assert time.monotonic() - started < 3.0, bootstrap


def test_metrics_count_verdicts_and_decision_wait(stack):
    with stack.client("client") as client:
        client.post("/requests", json={"request_type": "metrics"})
    with stack.client("analyst") as analyst:
        text = analyst.get("/metrics").text
    assert 'ratewarden_gateway_requests_total{verdict="allow"}' in text
    assert "ratewarden_gateway_decision_wait_seconds_bucket" in text
    assert "ratewarden_gateway_decision_timeouts_total" in text
    probed = [line for line in text.splitlines() if line.startswith("ratewarden_event_loop_lag_seconds_count")]
    assert len(probed) == 1 and float(probed[0].rsplit(" ", 1)[1]) > 0, probed  # the loop probe has ticked


def test_fail_open_and_fail_closed_with_the_worker_stopped(kafka_bootstrap, tmp_path):
    with GatewayStack(kafka_bootstrap, tmp_path, gateway_decision_timeout=0.5, gateway_fail_mode="open") as stack:
        with stack.client("client") as client:
            assert client.post("/requests", json={"request_type": "x"}).json()["fail_open"] is False
            stop_process(stack.workers.pop("w1"))
            started = time.monotonic()
            answer = client.post("/requests", json={"request_type": "x"})
            elapsed = time.monotonic() - started
        assert answer.status_code == 200 and 0.5 <= elapsed < 2.0
        assert answer.json() | {"request_id": "-"} == {"status": "ok", "request_id": "-", "shadow": False, "fail_open": True}
        assert answer.headers["Ratewarden-Fail-Open"] == "true"
        assert answer.headers["RateLimit-Policy"] == '"default";q=1000;w=60'

        closed = stack.settings.model_copy(update={"gateway_fail_mode": "closed"})
        with GatewayThread(closed) as gateway, httpx.Client(base_url=gateway.url) as http:
            started = time.monotonic()
            answer = http.post("/requests", json={"request_type": "x"},
                               headers={"Authorization": f"Bearer {stack.keys['client']}"})
            elapsed = time.monotonic() - started
        assert answer.status_code == 503 and 0.5 <= elapsed < 2.0
        assert answer.json()["status"] == "unavailable" and answer.headers["Retry-After"] == "1"


def self_signed(tmp_path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the openssl command)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_with_a_self_signed_certificate(kafka_bootstrap, tmp_path):
    cert, key = self_signed(tmp_path)
    with GatewayStack(kafka_bootstrap, tmp_path, workers=0) as stack:
        with GatewayThread(stack.settings, str(cert), str(key)) as gateway:
            assert gateway.url.startswith("https://")
            admin = {"Authorization": f"Bearer {stack.keys['admin']}"}
            with httpx.Client(base_url=gateway.url, verify=ssl.create_default_context(cafile=cert)) as https:
                assert https.get("/users/client-1", headers=admin).json()["role"] == "client"
                assert https.get("/users/client-1").status_code == 401
            with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on the TLS port
                httpx.get(gateway.url.replace("https", "http") + "/healthz", timeout=5)
            with pytest.raises(httpx.ConnectError):  # and the certificate is checked
                httpx.get(gateway.url + "/healthz", timeout=5)
