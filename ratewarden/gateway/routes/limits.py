"""GET /limits, GET|PUT|DELETE /limits/{user_id}: the compacted limits topic the workers follow live."""

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError

from agents.rules import limit_key
from ratewarden.gateway.auth import require
from ratewarden.gateway.models import Limit, LimitBody, LimitList, TypeQuery, UserIdPath
from ratewarden.gateway.routes import AUTH_ERRORS, NOT_FOUND, BODY_ERRORS, UNAVAILABLE
from schemas.descriptors import RULES_KEY_PREFIX
from schemas.limits import MEMBER_KEY_PREFIX, TIER_KEY_PREFIX, RateLimit

__all__ = ["router"]

router = APIRouter(tags=["limits"])
ADMIN = require("admin")
RESERVED_PREFIXES = (TIER_KEY_PREFIX, MEMBER_KEY_PREFIX, RULES_KEY_PREFIX)


def _out(limit: RateLimit) -> Limit:
    return Limit(**msgspec.structs.asdict(limit))


@router.get("/limits", response_model=LimitList, responses=AUTH_ERRORS, dependencies=[ADMIN])
async def list_limits(request: Request) -> LimitList:
    """Every explicit limit, and the default that applies to everyone else."""
    book = request.app.state.gateway.limits
    limits = sorted(book, key=lambda x: (x.user_id, x.request_type or ""))
    return LimitList(default=_out(book.default), limits=[_out(x) for x in limits])


@router.get("/limits/{user_id}", response_model=Limit, responses={**AUTH_ERRORS, **NOT_FOUND}, dependencies=[ADMIN])
async def get_limit(user_id: UserIdPath, request: Request, request_type: TypeQuery = None) -> Limit:
    limit = request.app.state.gateway.limits.get(limit_key(user_id, request_type))
    if limit is None:
        raise HTTPException(404, f"no limit set for {user_id!r}" + (f" and {request_type!r}" if request_type else ""))
    return _out(limit)


@router.put(
    "/limits/{user_id}", response_model=Limit, responses={**AUTH_ERRORS, **BODY_ERRORS, **UNAVAILABLE},
    dependencies=[ADMIN],
)
async def put_limit(user_id: UserIdPath, body: LimitBody, request: Request) -> Limit:
    """Set a user's limit (or, with ``request_type``, a limit of one request type); workers apply it live.

    A user id starting ``tier:``, ``member:`` or ``domain:`` cannot have one (its key would name a tier,
    a membership or descriptor rules): 422."""
    if user_id.startswith(RESERVED_PREFIXES):
        raise RequestValidationError([{"loc": ("path", "user_id"), "type": "value_error",
                                       "msg": f"a user id starting {user_id.partition(':')[0]}: cannot have a limit"}])
    limit = RateLimit(user_id=user_id, **body.model_dump())
    await request.app.state.gateway.write("limits", limit_key(user_id, body.request_type), msgspec.json.encode(limit))
    return _out(limit)


@router.delete(
    "/limits/{user_id}", status_code=204, responses={**AUTH_ERRORS, **NOT_FOUND, **UNAVAILABLE}, dependencies=[ADMIN]
)
async def delete_limit(user_id: UserIdPath, request: Request, request_type: TypeQuery = None) -> Response:
    gateway = request.app.state.gateway
    key = limit_key(user_id, request_type)
    if gateway.limits.get(key) is None:
        raise HTTPException(404, f"no limit set for {user_id!r}" + (f" and {request_type!r}" if request_type else ""))
    await gateway.write("limits", key, None)
    return Response(status_code=204)
