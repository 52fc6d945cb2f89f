"""The RLS front over a real grpc.aio server on 127.0.0.1: responses, validation, auth, health, /json, mTLS."""

import json
import subprocess

import grpc
import msgspec
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ratewarden.gateway.auth import UserBook, new_user
from ratewarden.gateway.auth_limiter import AuthLimiter
from ratewarden.rls.json_api import json_call
from ratewarden.rls.results import MAX_REMAINING, RlsResult, Status
from ratewarden.rls.server import SERVICE_NAME, start_rls_server
from ratewarden.rls.validation import Bounds
from streams.settings import Settings

Response = rls_pb2.RateLimitResponse
LIMITED = Status("OK", 10, "minute", "per_ip", remaining=7, reset_after=42)


class FakeEngine:
    """Answers ``result`` (or raises ``error``) and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.result = RlsResult("OK", [LIMITED])
        self.error: Exception | None = None

    async def should_rate_limit(self, domain, descriptors, hits):
        self.calls.append((domain, descriptors, hits))
        if self.error is not None:
            raise self.error
        return self.result


def users_and_keys() -> tuple[UserBook, dict[str, str]]:
    users, keys = UserBook(), {}
    for role in ("client", "service", "admin"):
        user, keys[role] = new_user(f"{role}-1", role, 0.0)
        users.apply(user.user_id.encode(), msgspec.json.encode(user))
    return users, keys


def request(*descriptors: list[tuple[str, str]], domain: str = "edge", hits: int = 0) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits, descriptors=[
        ratelimit_pb2.RateLimitDescriptor(entries=[{"key": k, "value": v} for k, v in d]) for d in descriptors
    ])


@pytest.fixture
async def rls():
    engine, (users, keys) = FakeEngine(), users_and_keys()
    limiter = AuthLimiter(3, 60.0)
    settings = Settings(rls_grpc_port=0, rls_max_descriptors=4, rls_max_entries=3, rls_max_entry_bytes=32,
                        rls_max_hits_addend=100)
    server, port = await start_rls_server(settings, engine, users, limiter)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)

    async def call(req, role: str | None = "service", key: str | None = None):
        key = key or (keys[role] if role else None)
        metadata = [("authorization", f"Bearer {key}")] if key else []
        return await stub.ShouldRateLimit(req, metadata=metadata, timeout=5)

    yield type("Rls", (), dict(engine=engine, call=call, channel=channel, limiter=limiter, port=port,
                                  key=keys["service"]))
    await channel.close()
    await server.stop(None)


async def refused(call, *args, **kwargs) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(*args, **kwargs)
    return info.value


async def test_ok_maps_statuses_and_headers(rls):
    rls.engine.result = RlsResult("OK", [LIMITED, Status("OK"), Status("OK", remaining=MAX_REMAINING)])
    answer = await rls.call(request([("ip", "1.2.3.4")], [("path", "/")], [("k", "")], hits=5))
    assert rls.engine.calls == [("edge", [[("ip", "1.2.3.4")], [("path", "/")], [("k", "")]], 5)]
    assert answer.overall_code == Response.OK
    first, second, third = answer.statuses
    assert (first.code, first.limit_remaining, first.duration_until_reset.seconds) == (Response.OK, 7, 42)
    assert (first.current_limit.requests_per_unit, first.current_limit.unit, first.current_limit.name) == (
        10, Response.RateLimit.MINUTE, "per_ip")
    assert not second.HasField("current_limit") and not second.HasField("duration_until_reset")
    assert third.limit_remaining == 4294967295 and not third.HasField("current_limit")
    headers = {h.key: h.value for h in answer.response_headers_to_add}
    assert headers == {"RateLimit-Policy": '"per_ip";q=10;w=60', "RateLimit": '"per_ip";r=7;t=42'}


async def test_over_limit_governs_headers_and_hits_default_to_one(rls):
    rls.engine.result = RlsResult("OVER_LIMIT", [
        Status("OK", 5, "second", None, remaining=1, reset_after=1),
        Status("OVER_LIMIT", 100, "hour", 'a"b', remaining=0, reset_after=3000),
        Status("OK", 3, "day", "c", remaining=0, reset_after=9),
    ])
    answer = await rls.call(request([("a", "1")], [("b", "2")], [("c", "3")]))
    assert rls.engine.calls[0][2] == 1
    assert answer.overall_code == Response.OVER_LIMIT
    assert [s.code for s in answer.statuses] == [Response.OK, Response.OVER_LIMIT, Response.OK]
    headers = {h.key: h.value for h in answer.response_headers_to_add}
    assert headers == {"RateLimit-Policy": r'"a\"b";q=100;w=3600', "RateLimit": r'"a\"b";r=0;t=3000'}


async def test_a_descriptors_own_hits_addend_wins_and_may_be_zero(rls):
    message = request([("a", "1")], [("b", "2")], [("c", "3")], hits=4)
    message.descriptors[1].hits_addend.value = 0
    message.descriptors[2].hits_addend.value = 7
    rls.engine.result = RlsResult("OK", [LIMITED] * 3)
    await rls.call(message)
    assert rls.engine.calls[-1][2] == [4, 0, 7]
    message.descriptors[2].hits_addend.value = 101
    assert (await refused(rls.call, message)).code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_least_remaining_governs_and_no_limit_means_no_headers(rls):
    rls.engine.result = RlsResult("OK", [LIMITED, Status("OK", 4, "week", None, remaining=2, reset_after=5)])
    answer = await rls.call(request([("a", "1")], [("b", "2")]))
    assert {h.key: h.value for h in answer.response_headers_to_add}["RateLimit"] == '"default";r=2;t=5'
    rls.engine.result = RlsResult("OK", [Status("OK", remaining=MAX_REMAINING), Status("OK", decided=False)])
    answer = await rls.call(request([("a", "1")], [("b", "2")]))
    assert not answer.response_headers_to_add


async def test_undecided_status_keeps_its_code(rls):
    rls.engine.result = RlsResult("OVER_LIMIT", [Status("OVER_LIMIT", decided=False)])
    answer = await rls.call(request([("a", "1")]))
    assert answer.overall_code == Response.OVER_LIMIT and answer.statuses[0].code == Response.OVER_LIMIT


@pytest.mark.parametrize(("req", "message"), [
    (request([("a", "1")], domain=""), "rate limit domain must not be empty"),
    (request(), "rate limit descriptor list must not be empty"),
    (request(*[[("a", "1")]] * 5), "5 descriptors: at most 4"),
    (request([]), "descriptor 0 has 0 entries"),
    (request([("a", "1")] * 4), "descriptor 0 has 4 entries"),
    (request([("a", "1")], [("", "v")]), "descriptor 1 entry 0: the key must not be empty"),
    (request([("k" * 33, "v")]), "longer than 32 bytes"),
    (request([("k", "é" * 17)]), "longer than 32 bytes"),
    (request([("a", "1")], hits=101), "hits_addend 101 is above the maximum 100"),
])
async def test_validation_errors(rls, req, message):
    error = await refused(rls.call, req)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details()
    assert not rls.engine.calls


async def test_bounds_are_inclusive(rls):
    await rls.call(request(*[[("k" * 32, "é" * 16)] * 3] * 4, hits=100))
    assert rls.engine.calls[0][2] == 100


async def test_engine_failure_is_internal_and_server_keeps_answering(rls):
    rls.engine.error = RuntimeError("backend down")
    error = await refused(rls.call, request([("a", "1")]))
    assert error.code() == grpc.StatusCode.INTERNAL and "RuntimeError" in error.details()
    rls.engine.error, rls.engine.result = None, "not a result"
    assert (await refused(rls.call, request([("a", "1")]))).code() == grpc.StatusCode.INTERNAL
    rls.engine.result = RlsResult("OK", [Status("OK")])
    assert (await rls.call(request([("a", "1")]))).overall_code == Response.OK


async def test_auth_refusals(rls):
    error = await refused(rls.call, request([("a", "1")]), role=None)
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
    error = await refused(rls.call, request([("a", "1")]), role="client")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await rls.call(request([("a", "1")]), role="admin")).overall_code == Response.OK
    for _ in range(3):
        error = await refused(rls.call, request([("a", "1")]), key="rw_wrong")
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "rw_wrong" not in error.details()
    error = await refused(rls.call, request([("a", "1")]))  # a valid key too, while the address is refused
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "refused for 60 s" in error.details()
    assert "127.0.0.1" in rls.limiter.refused


async def test_health_needs_no_key(rls):
    stub = health_pb2_grpc.HealthStub(rls.channel)
    for name in ("", SERVICE_NAME):
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_json_call():
    engine = FakeEngine()
    body = b'{"domain": "edge", "descriptors": [{"entries": [{"key": "ip", "value": "1.2.3.4"}]}], "hitsAddend": 2}'
    status, answer = await json_call(engine, body)
    assert status == 200 and engine.calls == [("edge", [[("ip", "1.2.3.4")]], 2)]
    decoded = json.loads(answer)
    assert decoded["overallCode"] == "OK"
    assert decoded["statuses"][0] == {"code": "OK", "currentLimit": {"requestsPerUnit": 10, "unit": "MINUTE",
                                      "name": "per_ip"}, "limitRemaining": 7, "durationUntilReset": "42s"}
    assert decoded["responseHeadersToAdd"][1] == {"key": "RateLimit", "value": '"per_ip";r=7;t=42'}
    engine.result = RlsResult("OVER_LIMIT", [Status("OVER_LIMIT", 1, "second", None, 0, 1)])
    status, answer = await json_call(engine, body)
    assert status == 429 and json.loads(answer)["overallCode"] == "OVER_LIMIT"


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "not a RateLimitRequest"),
    (b'{"domain": "d", "nope": 1}', "not a RateLimitRequest"),
    (b"\xff", "not UTF-8"),
    (b"[" * 100_000, "not a RateLimitRequest"),
    (b'{"domain": "", "descriptors": [{"entries": [{"key": "a"}]}]}', "rate limit domain must not be empty"),
    (b'{"domain": "d", "descriptors": []}', "rate limit descriptor list must not be empty"),
    (b'{"domain": "d", "descriptors": [{"entries": [{"key": "a"}]}], "hitsAddend": 5}', "above the maximum 4"),
])
async def test_json_call_400(body, message):
    status, answer = await json_call(FakeEngine(), body, Bounds(max_hits_addend=4))
    assert status == 400 and message in json.loads(answer)["error"]


async def test_json_call_engine_failure():
    engine = FakeEngine()
    engine.error = ValueError("boom")
    status, answer = await json_call(engine, b'{"domain": "d", "descriptors": [{"entries": [{"key": "a"}]}]}')
    assert status == 500 and "ValueError" in json.loads(answer)["error"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path):
    d = tmp_path
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{d}/{name}.key",
                 "-out", f"{d}/{name}.csr")
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
                 "-CAcreateserial", "-days", "1", "-extfile", f"{d}/{name}.ext", "-out", f"{d}/{name}.pem")
    return d


async def test_mtls_client_certificate_authenticates(certs):
    engine, (users, _) = FakeEngine(), users_and_keys()
    settings = Settings(rls_grpc_port=0, rls_tls_cert_file=certs / "server.pem", rls_tls_key_file=certs / "server.key",
                        rls_client_ca_file=certs / "ca.pem")
    server, port = await start_rls_server(settings, engine, users, AuthLimiter(3, 60.0))
    ca = (certs / "ca.pem").read_bytes()
    try:
        with_cert = grpc.ssl_channel_credentials(ca, (certs / "client.key").read_bytes(),
                                                 (certs / "client.pem").read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", with_cert) as channel:
            answer = await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request([("a", "1")]), timeout=5)
            assert answer.overall_code == Response.OK
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request([("a", "1")]), timeout=5)
            assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await server.stop(None)
    assert len(engine.calls) == 1


async def test_malformed_bytes_are_invalid_after_auth(rls):
    raw = rls.channel.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")
    error = await refused(raw, b"\xff\xff\xff", timeout=5)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await refused(raw, b"\xff\xff\xff", timeout=5, metadata=[("authorization", f"Bearer {rls.key}")])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed request message" in error.details()
    assert (await rls.call(request([("a", "1")]))).overall_code == Response.OK


async def test_tls_without_client_ca_needs_the_key(certs):
    engine, (users, keys) = FakeEngine(), users_and_keys()
    settings = Settings(rls_grpc_port=0, rls_tls_cert_file=certs / "server.pem", rls_tls_key_file=certs / "server.key")
    server, port = await start_rls_server(settings, engine, users, AuthLimiter(3, 60.0))
    try:
        credentials = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            error = await refused(stub.ShouldRateLimit, request([("a", "1")]), timeout=5)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            answer = await stub.ShouldRateLimit(request([("a", "1")]), timeout=5,
                                                metadata=[("authorization", f"Bearer {keys['service']}")])
            assert answer.overall_code == Response.OK
    finally:
        await server.stop(None)


async def test_settings_errors():
    users, limiter = UserBook(), AuthLimiter(3, 60.0)
    with pytest.raises(ValueError, match="rls_grpc_port"):
        await start_rls_server(Settings(), FakeEngine(), users, limiter)
    with pytest.raises(ValueError, match="needs rls_tls_cert_file"):
        await start_rls_server(Settings(rls_grpc_port=0, rls_client_ca_file="ca.pem"), FakeEngine(), users, limiter)
