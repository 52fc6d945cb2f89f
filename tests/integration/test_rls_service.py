"""Envoy's rate limit service against the real broker: gRPC and POST /json answers from worker-held counters."""

import asyncio
import uuid
from collections import Counter

import grpc
import httpx
import msgspec
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from bench.rls_differential import rate_limit_request
from ratewarden.client import read_topic_records
from ratewarden.gateway.runtime import Gateway
from ratewarden.gateway.testing import GatewayStack, wait_until
from ratewarden.rls.results import MAX_REMAINING

pytestmark = pytest.mark.kafka

RULES = """\
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: route
    value: /login
    rate_limit: {unit: day, requests_per_unit: 2, name: login}
  - key: route
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: health
    unlimited: true
  - key: canary
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
"""
OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT


def request(*descriptors: dict[str, str], domain: str = "edge", hits: int = 0) -> rls_pb2.RateLimitRequest:
    return rate_limit_request(domain, [list(d.items()) for d in descriptors], hits)


def call(stack: GatewayStack, message: rls_pb2.RateLimitRequest, key: str | None = None) -> rls_pb2.RateLimitResponse:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        return stub.ShouldRateLimit(message, metadata=[("authorization", f"Bearer {key or stack.keys['service']}")],
                                    timeout=30)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    with GatewayStack(kafka_bootstrap, tmp_path_factory.mktemp("rls"), rls_grpc_port=0) as stack:
        stack.load_rules(RULES)
        wait_until(lambda: call(stack, request({"route": "/warm-up"})).statuses[0].limit_remaining == 99 or True,
                   what="a first answer")
        yield stack


def test_remaining_counts_down_then_over_limit_and_every_hit_counts(stack):
    ip = f"198.51.100.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    answers = [call(stack, request({"remote_address": ip})) for _ in range(5)]
    assert [a.overall_code for a in answers] == [OK, OK, OK, OVER, OVER]
    assert [a.statuses[0].limit_remaining for a in answers] == [2, 1, 0, 0, 0]
    first = answers[0].statuses[0]
    assert (first.current_limit.requests_per_unit, first.current_limit.unit) == (3, rls_pb2.RateLimitResponse.RateLimit.HOUR)
    assert 0 < first.duration_until_reset.seconds <= 3600
    headers = {h.key.lower(): h.value for h in answers[-1].response_headers_to_add}
    assert "ratelimit" in headers and ";r=0" in headers["ratelimit"]
    other = call(stack, request({"remote_address": ip + "-b"}, hits=3))  # key-only: each value its own counter
    assert (other.overall_code, other.statuses[0].limit_remaining) == (OK, 0)


def test_the_most_specific_rule_wins_and_any_over_limit_descriptor_refuses_the_call(stack):
    tag = uuid.uuid4().hex[:8]
    login = [call(stack, request({"route": "/login"}, {"route": f"/page-{tag}"})) for _ in range(3)]
    assert [a.statuses[0].limit_remaining for a in login[:2]] == [1, 0]
    assert [a.statuses[0].current_limit.name for a in login[:1]] == ["login"]
    assert [a.overall_code for a in login] == [OK, OK, OVER]
    assert [a.statuses[1].code for a in login] == [OK, OK, OK]
    assert [a.statuses[1].limit_remaining for a in login] == [99, 98, 97], "the other descriptor still counts"


def test_unlimited_shadow_unmatched_and_unknown_domain_answer_as_the_reference_does(stack):
    tag = uuid.uuid4().hex[:8]
    answer = call(stack, request({"health": "x"}, {"nothing": "here"}, {"canary": tag}))
    assert [s.code for s in answer.statuses] == [OK, OK, OK]
    assert answer.statuses[0].limit_remaining == MAX_REMAINING and not answer.statuses[0].HasField("current_limit")
    assert answer.statuses[1].limit_remaining == 0 and not answer.statuses[1].HasField("current_limit")
    shadowed = call(stack, request({"canary": tag}))
    assert (shadowed.overall_code, shadowed.statuses[0].code, shadowed.statuses[0].limit_remaining) == (OK, OK, 0)
    unknown = call(stack, request({"remote_address": "x"}, domain=f"nope-{tag}"))
    assert unknown.overall_code == OK and not unknown.statuses[0].HasField("current_limit")


def test_bad_calls_get_a_status_with_a_message_and_keys_are_required(stack):
    with pytest.raises(grpc.RpcError) as empty:
        call(stack, request())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "descriptor" in empty.value.details()
    with pytest.raises(grpc.RpcError) as nokey:
        call(stack, request({"remote_address": "x"}), key="not-a-key")
    assert nokey.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as client:
        call(stack, request({"remote_address": "x"}), key=stack.keys["client"])
    assert client.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert call(stack, request({"route": "/still-fine"})).overall_code == OK


def test_the_json_form_answers_like_the_reference(stack):
    ip = f"json-{uuid.uuid4().hex[:8]}"
    body = {"domain": "edge", "descriptors": [{"entries": [{"key": "remote_address", "value": ip}]}]}
    with stack.client("service") as service:
        answers = [service.post("/json", json=body) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[0].json()["overallCode"] == "OK" and answers[0].json()["statuses"][0]["limitRemaining"] == 2
        assert answers[3].json()["overallCode"] == "OVER_LIMIT"
        assert service.post("/json", content=b"{nope").status_code == 400
    with stack.client("client") as client:
        assert client.post("/json", json=body).status_code == 403
    assert httpx.post(stack.url + "/json", json=body).status_code == 401
    with stack.client("admin") as admin:
        metrics = admin.get("/metrics").text
    assert 'ratewarden_rls_calls_total{code="OVER_LIMIT"}' in metrics
    assert 'ratewarden_rls_invalid_calls_total{reason="json"}' in metrics


async def _through_second_gateway(settings, ips: list[str], rounds: int) -> list[str]:
    """Calls through another gateway runtime in this loop: its own reply partition, the same counters."""
    gateway = Gateway(settings.model_copy(update={"gateway_reply_partition": 11}))
    await gateway.start()
    try:
        wait = [gateway.rules.document("edge") is not None]
        assert wait[0], "the second gateway read the rules at start"
        results = await asyncio.gather(*(gateway.rls.should_rate_limit("edge", [[("remote_address", ip)]], 1)
                                         for _ in range(rounds) for ip in ips))
        return [r.overall for r in results]
    finally:
        await gateway.stop()


def test_a_per_ip_limit_holds_exactly_with_two_workers_and_two_gateways(kafka_bootstrap, tmp_path):
    with GatewayStack(kafka_bootstrap, tmp_path, workers=2, rls_grpc_port=0) as stack:
        stack.load_rules(RULES.replace("requests_per_unit: 3}", "requests_per_unit: 20}"))
        ips = [f"203.0.113.{i}" for i in range(12)]
        second = asyncio.run(_through_second_gateway(stack.settings, ips, 15))
        first = [call(stack, request({"remote_address": ip})).overall_code for _ in range(15) for ip in ips]
        allowed = Counter(ip for ip, code in zip(ips * 15, second) if code == "OK")
        allowed.update(ip for ip, code in zip(ips * 15, first) if code == OK)
        assert allowed == {ip: 20 for ip in ips}, "exactly the limit per IP across both gateways"
        assert all(p.poll() is None for p in stack.workers.values())


def test_ghz_calls_ratewarden_and_every_call_is_counted_exactly(stack, tmp_path):
    """A load generator that is not ours: 400 calls, 8 at a time, on one route counter of limit 100/hour."""
    import json
    import subprocess

    from bench.peers.envoy_ratelimit import build_ghz
    from bench.peers.rls_protoset import CALL, write_protoset

    route = f"/ghz-{uuid.uuid4().hex[:8]}"
    data = {"domain": "edge", "descriptors": [{"entries": [{"key": "route", "value": route}]}]}
    done = subprocess.run([str(build_ghz()), "--insecure", "--protoset", str(write_protoset(tmp_path / "rls.protoset")),
                           "--call", CALL, "-n", "400", "-c", "8", "--format", "json", "-d", json.dumps(data),
                           "-m", json.dumps({"authorization": f"Bearer {stack.keys['service']}"}), stack.grpc_target],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["count"] == 400 and report["statusCodeDistribution"] == {"OK": 400}, report.get("errorDistribution")
    after = call(stack, request({"route": route}, hits=0))  # hits_addend 0 means 1: the 401st hit
    assert (after.overall_code, after.statuses[0].limit_remaining) == (OVER, 0)

    def audited():
        answers = [msgspec.json.decode(r.value) for r in read_topic_records(stack.settings, stack.settings.rls_decisions_topic)]
        mine = [a for a in answers if msgspec.json.decode(a["counter"])[1] == [["route", route]]]
        return mine if len(mine) >= 401 else None

    mine = wait_until(audited, what="every answer on the audit topic")
    assert sorted(a["count"] for a in mine) == list(range(1, 402)), "each hit counted once, none lost"
    assert sum(a["code"] == "OK" for a in mine) == 100
    with grpc.insecure_channel(stack.grpc_target) as channel:  # a descriptor's own hits_addend 0: look only
        message = request({"route": route + "-fresh"})
        message.descriptors[0].hits_addend.value = 0
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        answer = stub.ShouldRateLimit(message, metadata=[("authorization", f"Bearer {stack.keys['service']}")])
    assert answer.statuses[0].limit_remaining == 100, "checked without counting"


def test_rules_change_live_and_a_counter_keeps_its_count(stack):
    domain = f"live-{uuid.uuid4().hex[:6]}"
    rules = "domain: {d}\ndescriptors:\n  - key: k\n    rate_limit: {{unit: hour, requests_per_unit: {n}}}\n"
    stack.load_rules(rules.format(d=domain, n=5))
    assert [call(stack, request({"k": "v"}, domain=domain)).statuses[0].limit_remaining for _ in range(3)] == [4, 3, 2]
    stack.load_rules(rules.format(d=domain, n=10))  # no restart: the gateway applies it as it arrives
    answer = call(stack, request({"k": "v"}, domain=domain)).statuses[0]
    assert (answer.current_limit.requests_per_unit, answer.limit_remaining) == (10, 6), "the same counter, a new limit"
    stack.load_rules(rules.format(d=domain, n=10).replace("hour", "minute"))  # a new unit: a new counter
    assert call(stack, request({"k": "v"}, domain=domain)).statuses[0].limit_remaining == 9
