"""POST /requests (the decision inline, with IETF RateLimit headers) and GET /requests/{user_id} (history)."""

import math

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ratewarden.gateway.auth import client_address, require
from ratewarden.gateway.history import HistoryUnavailable
from ratewarden.gateway.metrics import ANSWERS
from ratewarden.gateway.models import (
    Blocked, HistoryPage, Problem, SubmitBody, Submitted, Throttled, Unavailable, UserIdPath,
)
from ratewarden.gateway.routes import AUTH_ERRORS, BODY_ERRORS
from ratewarden.gateway.runtime import Gateway, Outcome
from schemas.decisions import Decision
from schemas.users import User

__all__ = ["router", "rate_headers"]

router = APIRouter(tags=["requests"])

#: The policy name in the RateLimit headers: the limit that governed the decision.
POLICY = "default"
_RATE_HEADERS = {
    "RateLimit-Policy": {"description": 'draft-ietf-httpapi-ratelimit-headers, e.g. `"default";q=100;w=60`',
                         "schema": {"type": "string"}},
    "RateLimit": {"description": 'remaining quota and seconds to reset, e.g. `"default";r=42;t=17`',
                  "schema": {"type": "string"}},
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds (integer) until a request would be allowed",
                                "schema": {"type": "string"}}}


def _ceil(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-9))


def rate_headers(d: Decision) -> dict[str, str]:
    """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers) of a decision."""
    window = max(1, _ceil(d.reset_at - d.window_start))
    return {
        "RateLimit-Policy": f'"{POLICY}";q={d.limit};w={window}',
        "RateLimit": f'"{POLICY}";r={d.remaining};t={_ceil(d.reset_at - d.ts_event)}',
    }


def _answer(gateway: Gateway, outcome: Outcome) -> JSONResponse:
    event, d = outcome
    if d is None:
        rule = gateway.limits.rules_for(event.user_id, event.request_type)[0]
        headers = {"RateLimit-Policy": f'"{POLICY}";q={rule.limit};w={max(1, _ceil(rule.window))}'}
        if gateway.settings.gateway_fail_mode == "open":
            ANSWERS.labels("fail_open").inc()
            headers["Ratewarden-Fail-Open"] = "true"
            body = {"status": "ok", "request_id": event.request_id, "shadow": False, "fail_open": True}
            return JSONResponse(body, 200, headers)
        ANSWERS.labels("fail_closed").inc()
        headers["Retry-After"] = "1"
        detail = f"no decision within {gateway.settings.gateway_decision_timeout:g} s"
        return JSONResponse({"status": "unavailable", "request_id": event.request_id, "detail": detail}, 503, headers)
    ANSWERS.labels(d.verdict).inc()
    headers = rate_headers(d)
    if d.verdict == "allow":
        body = {"status": "ok", "request_id": d.request_id, "shadow": d.shadow, "fail_open": False}
        return JSONResponse(body, 200, headers)
    if d.verdict == "throttle":
        headers["Retry-After"] = str(max(1, _ceil(d.retry_after)))
        body = {"status": "throttled", "request_id": d.request_id, "reason": d.reason, "retry_after": d.retry_after}
        return JSONResponse(body, 429, headers)
    return JSONResponse({"status": "blocked", "request_id": d.request_id, "reason": d.reason}, 403, headers)


@router.post(
    "/requests",
    response_model=Submitted,
    responses={
        200: {"headers": _RATE_HEADERS, "description": "allowed (or allowed because no decision came: fail open)"},
        429: {"model": Throttled | Problem, "headers": {**_RATE_HEADERS, **_RETRY_AFTER},
              "description": "throttled, or too many failed authentications from this address"},
        403: {"model": Blocked | Problem, "headers": _RATE_HEADERS,
              "description": "blocked by the blocklist, or the key's role may not submit"},
        401: AUTH_ERRORS[401],
        503: {"model": Unavailable, "headers": _RETRY_AFTER, "description": "no decision in time (fail closed)"},
        **BODY_ERRORS,
    },
    summary="Submit a request and get the limiter's decision",
)
async def submit(
    body: SubmitBody, request: Request, caller: User = require("client", "service", "admin")
) -> JSONResponse:
    """The caller is its key's user; a service (or admin) key may name another ``user_id`` and ``ip``."""
    gateway: Gateway = request.app.state.gateway
    if (body.user_id is not None or body.ip is not None) and caller.role not in ("service", "admin"):
        raise HTTPException(403, "only service and admin keys may set user_id or ip")
    user_id = body.user_id or caller.user_id
    ip = body.ip or client_address(request)
    return _answer(gateway, await gateway.decide(user_id, ip, body.request_type))


@router.get(
    "/requests/{user_id}",
    response_model=HistoryPage,
    responses={**AUTH_ERRORS, 503: {"model": Problem, "description": "no worker answered in time"}},
    summary="A user's recent requests, newest first",
)
async def history(
    user_id: UserIdPath,
    request: Request,
    limit: int = Query(100, ge=1, le=1000, description="page size"),
    before: float | None = Query(None, ge=0, le=1e11, allow_inf_nan=False, description="only requests before this ts"),
    caller: User = require("client", "analyst", "admin"),
) -> HistoryPage:
    """Clients may read only their own history; analysts and admins anyone's."""
    if caller.role == "client" and user_id != caller.user_id:
        raise HTTPException(403, "a client key may read only its own history")
    try:
        page = await request.app.state.gateway.history.read(user_id, limit, before)
        return HistoryPage(user_id=user_id, requests=page["requests"], next_before=page["next_before"])
    except HistoryUnavailable as exc:
        raise HTTPException(503, f"history unavailable: {exc}") from None
    except (KeyError, TypeError, ValidationError) as exc:  # a worker of another version?
        raise HTTPException(503, f"history unavailable: unexpected answer from the worker: {exc!r}") from None
