"""POST /requests/batch and `ratewarden gateway --workers 2`, against the real broker and a worker process."""

import re
import shutil
import socket
import ssl
import uuid

import httpx
import pytest

from ratewarden.gateway.headers import USER
from ratewarden.gateway.server import start_gateway_process
from ratewarden.gateway.testing import GatewayStack, wait_until
from ratewarden.processes import stop_process
from test_console_access import csrf_on
from test_gateway import self_signed

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    with GatewayStack(kafka_bootstrap, tmp_path_factory.mktemp("batch")) as stack:
        yield stack


def test_a_batch_gets_one_real_decision_per_item_in_order(stack):
    user = f"batch-{uuid.uuid4().hex[:8]}"
    with stack.client("service") as service, stack.client("admin") as admin:
        assert admin.put(f"/limits/{user}", json={"limit": 3, "window": 3600}).status_code == 200
        wait_until(lambda: service.post("/requests", json={"request_type": "probe", "user_id": user, "ip": "192.0.2.5"})
                   .headers["RateLimit-Policy"] == f'"{USER}";q=3;w=3600', what="the new limit at the worker")
        items = [{"request_type": "read", "user_id": user, "ip": "192.0.2.5"} for _ in range(3)]
        items.insert(1, {"request_type": "read", "user_id": user, "ip": "not-an-ip"})
        items.append({"request_type": "read", "user_id": f"{user}-other", "ip": "2001:DB8::7"})
        answer = service.post("/requests/batch", json={"requests": items})
        assert answer.status_code == 200, answer.text
        entries = answer.json()["decisions"]
        history = admin.get(f"/requests/{user}").json()["requests"]

    assert [e["code"] for e in entries] == [200, 422, 200, 429, 200]
    assert entries[1]["status"] == "invalid" and entries[1]["detail"].startswith("ip:")
    first, _, second, throttled, other = entries
    assert [first["ratelimit"].split(";")[1], second["ratelimit"].split(";")[1]] == ["r=1", "r=0"]  # the probe used one
    assert throttled["status"] == "throttled" and throttled["reason"] == "rate_limited"
    assert throttled["retry_after_header"] == str(max(1, int(-(-throttled["retry_after"] // 1))))
    assert all(e["ratelimit_policy"] == f'"{USER}";q=3;w=3600' for e in (first, second, throttled))
    assert other["ratelimit_policy"] == '"default";q=1000;w=60' and other["status"] == "ok"
    recorded = {h["request_id"]: h for h in history}
    assert all(e["request_id"] in recorded for e in (first, second, throttled))  # real, durable decisions
    assert recorded[throttled["request_id"]]["verdict"] == "throttle"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_two_gateway_worker_processes_serve_one_port_over_tls(stack, tmp_path):
    port, log = free_port(), tmp_path / "gateway.log"
    cert, key = self_signed(tmp_path)
    process = start_gateway_process(stack.settings, log, "127.0.0.1", port, "--workers", "2",
                                    "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        def started() -> bool:
            assert process.poll() is None, log.read_text()
            return log.read_text().count("Application startup complete") == 2

        wait_until(started, timeout=90.0, what="two started gateway workers")
        pids = set(re.findall(r"Started server process \[(\d+)\]", log.read_text()))
        assert len(pids) == 2 and str(process.pid) not in pids
        headers = {"Authorization": f"Bearer {stack.keys['client']}"}
        tls = ssl.create_default_context(cafile=cert)
        answers = []
        for _ in range(20):  # a connection each: either worker may accept it
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", headers=headers, timeout=30, verify=tls) as http:
                answers.append(http.post("/requests", json={"request_type": "workers"}))
                batch = http.post("/requests/batch", json={"requests": [{"request_type": "workers"}] * 2})
                assert [e["code"] for e in batch.json()["decisions"]] == [200, 200]
        # A console session signed by whichever worker took the login is good on every worker.
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=30, verify=tls) as login:
            signed = login.post("/console/login", data={"key": stack.keys["analyst"], "csrf": csrf_on(login, "/console/login")})
            assert signed.status_code == 303, signed.text
            session = login.cookies["rw_session"]
        for _ in range(20):
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=30, verify=tls,
                              cookies={"rw_session": session}) as http:
                page = http.get("/console/bans")
                assert page.status_code == 200 and "<title>Bans" in page.text, page.status_code
    finally:
        assert stop_process(process) == 0
    assert all(a.status_code == 200 and a.json()["fail_open"] is False for a in answers), [a.text for a in answers]
    assert len({a.json()["request_id"] for a in answers}) == 20
