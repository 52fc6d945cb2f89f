"""Whatever bytes or messages arrive, the RLS server answers a response or a status with a message, and lives on.

The server runs on its own event loop in a thread (hypothesis drives plain functions), with a fake
engine that answers every descriptor; the calls go through a generic unary call, so raw bytes reach
grpc's deserializer unchanged.
"""

import asyncio
import threading

import grpc
import msgspec
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from hypothesis import HealthCheck, given, settings, strategies as st

from ratewarden.gateway.auth import UserBook, new_user
from ratewarden.gateway.auth_limiter import AuthLimiter
from ratewarden.rls.results import MAX_REMAINING, RlsResult, Status
from ratewarden.rls.server import start_rls_server
from streams.settings import Settings

PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


class AnsweringEngine:
    """One status per descriptor, varied by the descriptor's first key; a key "boom" raises."""

    async def should_rate_limit(self, domain, descriptors, hits):
        if any(k == "boom" for d in descriptors for k, _ in d):
            raise RuntimeError("boom")
        statuses = [Status("OK", remaining=MAX_REMAINING) if len(d[0][0]) % 2 else
                    Status("OK", hits, "second", d[0][0], remaining=1, reset_after=1) for d in descriptors]
        return RlsResult("OK", statuses)


@pytest.fixture(scope="module")
def server():
    loop = asyncio.new_event_loop()
    users = UserBook()
    user, key = new_user("svc-1", "service", 0.0)
    users.apply(user.user_id.encode(), msgspec.json.encode(user))
    settings_ = Settings(rls_grpc_port=0)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    rls, port = asyncio.run_coroutine_threadsafe(
        start_rls_server(settings_, AnsweringEngine(), users, AuthLimiter(0, 60.0)), loop).result(10)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, [("authorization", f"Bearer {key}")]
    channel.close()
    asyncio.run_coroutine_threadsafe(rls.stop(None), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def answer(server, payload: bytes, path: str = PATH):
    """A decoded response, or the (code, details) of the status the server answered."""
    channel, metadata = server
    raw = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        reply = raw(payload, metadata=metadata, timeout=10)
        return rls_pb2.RateLimitResponse.FromString(reply) if path == PATH else reply
    except grpc.RpcError as error:
        assert error.code() != grpc.StatusCode.UNKNOWN, error.details()
        assert error.details(), error.code()
        return error.code(), error.details()


def still_serving(server) -> None:
    ok = rls_pb2.RateLimitRequest(domain="d", descriptors=[ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="ab", value="v")])])
    response = answer(server, ok.SerializeToString())
    assert isinstance(response, rls_pb2.RateLimitResponse) and response.overall_code == rls_pb2.RateLimitResponse.OK


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=2_048))
def test_random_bytes(server, payload):
    answer(server, payload)
    answer(server, payload, "/grpc.health.v1.Health/Check")
    still_serving(server)


texts = st.one_of(st.text(max_size=40), st.text(min_size=1_000, max_size=3_000),
                  st.sampled_from(["", "boom", "é" * 300]))
entries = st.lists(st.builds(ratelimit_pb2.RateLimitDescriptor.Entry, key=texts, value=texts), max_size=20)
descriptors = st.lists(st.builds(ratelimit_pb2.RateLimitDescriptor, entries=entries), max_size=80)
requests = st.builds(rls_pb2.RateLimitRequest, domain=texts, descriptors=descriptors,
                     hits_addend=st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 1_000_000, 1_000_001])))


@FUZZ
@given(requests)
def test_random_requests(server, req):
    got = answer(server, req.SerializeToString())
    if isinstance(got, rls_pb2.RateLimitResponse):
        assert len(got.statuses) == len(req.descriptors) and got.overall_code == rls_pb2.RateLimitResponse.OK
    else:
        assert got[0] in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL,
                          grpc.StatusCode.RESOURCE_EXHAUSTED), got
    still_serving(server)


def test_huge_message_is_refused_and_server_lives(server):
    code, details = answer(server, b"\x0a" + b"\xff\xff\x7f" + b"x" * (2 * 1024 * 1024))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and details
    still_serving(server)
