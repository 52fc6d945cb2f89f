"""The grpc.aio ``RateLimitService`` servicer, and the one call path it shares with ``POST /json``.

``decide`` is that path: validate, ask the engine, build the response, count. It raises
``InvalidCall`` for a request outside the bounds and ``EngineFailure`` for anything the engine (or
turning its answer into protobuf) raised, so neither front can crash on a bad engine answer: the
gRPC front turns them into ``INVALID_ARGUMENT`` / ``INTERNAL``, ``/json`` into 400 / 500. An engine
failure is logged with its traceback the first time and once per ``LOG_EVERY`` after, so a broken
backend cannot flood the log at the call rate.

Malformed protobuf bytes never reach this code: grpc's own deserializer refuses them.
"""

import logging
import time

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratewarden.rls.metrics import ENGINE_ERRORS, INVALID_CALLS, INVALID_REASONS, LATENCY, call_counter
from ratewarden.rls.responses import build_response
from ratewarden.rls.validation import DEFAULT_BOUNDS, Bounds, InvalidCall, validate

__all__ = ["EngineFailure", "LOG_EVERY", "RateLimitService", "decide"]

logger = logging.getLogger(__name__)

#: An engine failure is logged with its traceback once per this many.
LOG_EVERY = 1_000


class EngineFailure(RuntimeError):
    """The engine raised (or answered something that is not an ``RlsResult``); the message is safe to send."""


class _FailureLog:
    """Counts engine failures and logs the first and every ``LOG_EVERY``-th with its traceback."""

    count = 0

    @classmethod
    def record(cls, domain: str) -> None:
        cls.count += 1
        ENGINE_ERRORS.inc()
        if cls.count % LOG_EVERY == 1 or LOG_EVERY == 1:
            logger.exception("rate limit engine failed for domain %r (%d failures so far)", domain, cls.count)


def _invalid(exc: InvalidCall) -> None:
    counter = INVALID_REASONS.get(exc.reason)
    (counter if counter is not None else INVALID_CALLS.labels(exc.reason)).inc()


async def decide(engine, request: rls_pb2.RateLimitRequest,
                 bounds: Bounds = DEFAULT_BOUNDS) -> rls_pb2.RateLimitResponse:
    """The response to ``request``; raises ``InvalidCall`` or ``EngineFailure``."""
    try:
        domain, descriptors, hits = validate(request, bounds)
    except InvalidCall as exc:
        _invalid(exc)
        raise
    start = time.perf_counter()
    try:
        result = await engine.should_rate_limit(domain, descriptors, hits)
        response = build_response(result)
    except Exception as exc:
        _FailureLog.record(domain)
        raise EngineFailure(f"rate limit engine failed: {type(exc).__name__}") from exc
    LATENCY.observe(time.perf_counter() - start)
    call_counter(result.overall).inc()
    return response


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    """``envoy.service.ratelimit.v3.RateLimitService`` over ``engine`` (its ``should_rate_limit``)."""

    def __init__(self, engine, bounds: Bounds = DEFAULT_BOUNDS) -> None:
        self.engine, self.bounds = engine, bounds

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext):  # noqa: N802
        try:
            return await decide(self.engine, request, self.bounds)
        except InvalidCall as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, exc.message
        except EngineFailure as exc:
            code, message = grpc.StatusCode.INTERNAL, str(exc)
        await context.abort(code, message)
