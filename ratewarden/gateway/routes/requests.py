"""POST /requests and POST /requests/batch (decisions inline, IETF RateLimit fields), GET /requests/{user_id}.

The two POST routes are answered by :class:`ratewarden.gateway.hot.HotRoutes` before FastAPI sees
them; they are declared here for the OpenAPI document, and serve the same answers (through
:class:`ratewarden.gateway.inline.Inline`) if this app is ever served without the hot routes.
"""

import msgspec
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from ratewarden.gateway.auth import client_address, require
from ratewarden.gateway.history import HistoryUnavailable
from ratewarden.gateway.bodies import Invalid
from ratewarden.gateway.headers import rate_headers
from ratewarden.gateway.hot import reply_of
from ratewarden.gateway.inline import Reply
from ratewarden.gateway.models import (
    BatchBody, BatchDecisions, Blocked, HistoryPage, Problem, SubmitBody, Submitted, Throttled, Unavailable,
    UserIdPath,
)
from ratewarden.gateway.routes import AUTH_ERRORS, BODY_ERRORS
from schemas.users import User

__all__ = ["rate_headers", "router"]  # rate_headers: its home is ratewarden.gateway.headers

router = APIRouter(tags=["requests"])

_RATE_HEADERS = {
    "RateLimit-Policy": {"description": 'one item per applicable limit ("default", "user", "type"), e.g. '
                                        '`"user";q=100;w=60, "type";q=10;w=60`', "schema": {"type": "string"}},
    "RateLimit": {"description": 'the governing limit: remaining quota and seconds to reset, e.g. `"user";r=42;t=17`',
                  "schema": {"type": "string"}},
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds (integer) until a request would be allowed",
                                "schema": {"type": "string"}}}


async def _inline(request: Request, caller: User, batch: bool) -> Response:
    inline = request.app.state.inline
    handler = inline.batch if batch else inline.submit
    try:
        reply: Reply = await handler(caller, await request.body(), request.headers.get("content-type", "").encode()
                                     or None, lambda: client_address(request))
    except (HTTPException, Invalid) as exc:
        reply = reply_of(exc)
    status, body, fields = reply
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in fields}
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


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
) -> Response:
    """The caller is its key's user; a service (or admin) key may name another ``user_id`` and ``ip``."""
    return await _inline(request, caller, batch=False)


@router.post(
    "/requests/batch",
    response_model=BatchDecisions,
    responses={200: {"description": "one entry per request, in order (each with its own code)"},
               **AUTH_ERRORS, **BODY_ERRORS},
    summary="Submit up to gateway_batch_max_items requests and get one decision each, in order",
)
async def submit_batch(
    body: BatchBody, request: Request, caller: User = require("client", "service", "admin")
) -> Response:
    """Each item as for ``POST /requests`` (client keys: no ``user_id``/``ip``). The answer is 200 with
    one entry per item: the body the single call would give, its status as ``code`` and its RateLimit
    fields as strings. An invalid item gets ``{"status": "invalid", "code": 422, "detail": ...}``
    without failing the rest; a body without a ``requests`` list of 1..max items is a 422.
    """
    return await _inline(request, caller, batch=True)


@router.get(
    "/requests/{user_id}",
    response_model=HistoryPage,
    response_model_exclude_unset=True,  # an item's status only where the request had one
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
