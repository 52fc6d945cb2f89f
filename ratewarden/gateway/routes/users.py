"""POST /users (the key is returned once), GET /users/{user_id}, DELETE /users/{user_id} (revokes)."""

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response

from ratewarden.gateway.auth import new_user, require
from ratewarden.gateway.models import CreatedUser, NewUser, Problem, UserIdPath, UserInfo
from ratewarden.gateway.routes import AUTH_ERRORS, NOT_FOUND, BODY_ERRORS, UNAVAILABLE

__all__ = ["router"]

router = APIRouter(tags=["users"], dependencies=[require("admin")])


@router.post(
    "/users", status_code=201, response_model=CreatedUser,
    responses={**AUTH_ERRORS, **BODY_ERRORS, **UNAVAILABLE, 409: {"model": Problem, "description": "the user exists"}},
)
async def create_user(body: NewUser, request: Request) -> CreatedUser:
    gateway = request.app.state.gateway
    if gateway.users.get(body.user_id) is not None:
        raise HTTPException(409, f"user {body.user_id!r} exists; delete it first to issue a new key")
    user, key = new_user(body.user_id, body.role, gateway.clock())
    await gateway.write("users", user.user_id, msgspec.json.encode(user))
    return CreatedUser(user_id=user.user_id, role=user.role, created_at=user.created_at, api_key=key)


@router.get("/users/{user_id}", response_model=UserInfo, responses={**AUTH_ERRORS, **NOT_FOUND})
async def get_user(user_id: UserIdPath, request: Request) -> UserInfo:
    user = request.app.state.gateway.users.get(user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id!r}")
    return UserInfo(user_id=user.user_id, role=user.role, created_at=user.created_at)


@router.delete("/users/{user_id}", status_code=204, responses={**AUTH_ERRORS, **NOT_FOUND, **UNAVAILABLE})
async def delete_user(user_id: UserIdPath, request: Request) -> Response:
    """Delete the user; its key stops working on every gateway as soon as each reads the tombstone."""
    gateway = request.app.state.gateway
    if gateway.users.get(user_id) is None:
        raise HTTPException(404, f"no user {user_id!r}")
    await gateway.write("users", user_id, None)
    return Response(status_code=204)
