"""Failed authentications per client address, against the real broker, a worker and the gateway.

The test client is the trusted proxy (127.0.0.1), so each request's client address is the one it
names in ``X-Forwarded-For``.
"""

import httpx
import pytest

from ratewarden.gateway.testing import GatewayStack

pytestmark = pytest.mark.kafka

MAX_FAILURES = 5
WINDOW = 60.0
WRONG = {"Authorization": "Bearer rw_" + "x" * 43}
METRICS = ("ratewarden_gateway_auth_failures_total", "ratewarden_gateway_auth_refusals_total")


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    with GatewayStack(
        kafka_bootstrap, tmp_path_factory.mktemp("auth-limit"), gateway_trusted_proxies="127.0.0.1",
        gateway_auth_max_failures=MAX_FAILURES, gateway_auth_failure_window=WINDOW,
        gateway_auth_exempt_cidrs="192.0.2.0/24",
    ) as stack:
        yield stack


def from_ip(ip: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Forwarded-For": ip, **(headers or {})}


def submit(http: httpx.Client, ip: str, headers: dict[str, str]) -> httpx.Response:
    return http.post("/requests", json={"request_type": "auth-limit"}, headers=from_ip(ip, headers))


def metrics(stack: GatewayStack) -> dict[str, float]:
    with stack.client("admin") as admin:
        text = admin.get("/metrics", headers=from_ip("203.0.113.200")).text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith(METRICS)}


def test_repeated_wrong_keys_from_one_address_are_refused_past_the_limit_another_address_is_served(stack):
    valid = {"Authorization": f"Bearer {stack.keys['client']}"}
    before = metrics(stack)
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        guesses = [submit(http, "198.51.100.7", WRONG).status_code for _ in range(MAX_FAILURES)]
        refused = submit(http, "198.51.100.7", WRONG)
        refused_valid = submit(http, "198.51.100.7", valid)  # a right guess is worth nothing now
        refused_other_endpoint = http.get("/requests/client-1", headers=from_ip("198.51.100.7", valid))
        served = submit(http, "198.51.100.8", valid)
        other_wrong = submit(http, "198.51.100.8", WRONG)
    after = metrics(stack)

    assert guesses == [401] * MAX_FAILURES
    for answer in (refused, refused_valid, refused_other_endpoint):
        assert answer.status_code == 429
        assert 0 < int(answer.headers["Retry-After"]) <= WINDOW
        assert "too many failed authentications from 198.51.100.7" in answer.json()["detail"]
    assert served.status_code == 200, served.text
    assert served.json()["status"] == "ok" and not served.json()["fail_open"]
    assert other_wrong.status_code == 401  # the other address has its own count
    assert after["ratewarden_gateway_auth_failures_total"] - before["ratewarden_gateway_auth_failures_total"] == MAX_FAILURES + 1
    assert after["ratewarden_gateway_auth_refusals_total"] - before["ratewarden_gateway_auth_refusals_total"] == 3


def test_an_exempt_address_is_never_refused(stack):
    valid = {"Authorization": f"Bearer {stack.keys['client']}"}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        guesses = [submit(http, "192.0.2.44", WRONG).status_code for _ in range(2 * MAX_FAILURES)]
        served = submit(http, "192.0.2.44", valid)
    assert guesses == [401] * (2 * MAX_FAILURES)
    assert served.status_code == 200, served.text


def test_a_refused_address_is_served_again_once_its_window_has_passed(stack):
    valid = {"Authorization": f"Bearer {stack.keys['client']}"}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        for _ in range(MAX_FAILURES):
            submit(http, "198.51.100.9", WRONG)
        assert submit(http, "198.51.100.9", valid).status_code == 429
        limiter = stack.gateway.app.state.auth_limiter
        clock = limiter.clock
        limiter.clock = lambda: clock() + WINDOW  # the gateway's own limiter, its time moved on (no sleep)
        try:
            served = submit(http, "198.51.100.9", valid)
        finally:
            limiter.clock = clock
    assert served.status_code == 200, served.text
    assert served.json()["status"] == "ok"
