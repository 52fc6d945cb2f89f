"""GET /tiers, GET|PUT|DELETE /tiers/{name}, PUT|DELETE /tiers/{name}/members/{user_id}: tiers of limits.

A tier's limits and its memberships are records on the compacted limits topic (``schemas.limits``),
so every worker applies them live. Memberships have routes of their own under the tier rather than a
field of ``/users``: those are the API's key holders, while most limited users are ids in the
request stream that have no key.
"""

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response

from agents.rules import LimitBook, member_key, tier_key
from ratewarden.gateway.auth import require
from ratewarden.gateway.models import Tier, TierBody, TierLimitInfo, TierList, TierMember, TierPath, UserIdPath
from ratewarden.gateway.routes import AUTH_ERRORS, BODY_ERRORS, NOT_FOUND, UNAVAILABLE
from schemas.limits import TierLimit, TierMembership

__all__ = ["router"]

router = APIRouter(tags=["tiers"])
ADMIN, READER = require("admin"), require("analyst", "admin")


def _info(limit: TierLimit) -> TierLimitInfo:
    fields = msgspec.structs.asdict(limit)
    del fields["tier"]
    return TierLimitInfo(**fields)


def _tier(book: LimitBook, name: str, limits: list[TierLimit]) -> Tier:
    base = next((x for x in limits if x.request_type is None), None)
    return Tier(name=name, limit=None if base is None else _info(base),
                types=[_info(x) for x in limits if x.request_type is not None], members=book.members(name))


def _limits_of(book: LimitBook, name: str) -> list[TierLimit]:
    """The tier's limits; 404 if it has none and no members."""
    limits = book.tiers().get(name)
    if limits is None:
        raise HTTPException(404, f"no tier {name!r}")
    return limits


@router.get("/tiers", response_model=TierList, responses=AUTH_ERRORS, dependencies=[READER])
async def list_tiers(request: Request) -> TierList:
    """Every tier with limits or members."""
    book = request.app.state.gateway.limits
    return TierList(tiers=[_tier(book, name, limits) for name, limits in book.tiers().items()])


@router.get("/tiers/{name}", response_model=Tier, responses={**AUTH_ERRORS, **NOT_FOUND}, dependencies=[READER])
async def get_tier(name: TierPath, request: Request) -> Tier:
    book = request.app.state.gateway.limits
    return _tier(book, name, _limits_of(book, name))


@router.put("/tiers/{name}", response_model=Tier, responses={**AUTH_ERRORS, **BODY_ERRORS, **UNAVAILABLE},
            dependencies=[ADMIN])
async def put_tier(name: TierPath, body: TierBody, request: Request) -> Tier:
    """Set a tier whole: its limit and its limits per request type (types it had and the body leaves
    out are removed). Members get them from their next request on, unless they have limits of their own."""
    gateway = request.app.state.gateway
    fields = body.model_dump(exclude={"types"})
    limits = [TierLimit(tier=name, **fields)] + [TierLimit(tier=name, **t.model_dump()) for t in body.types]
    kept = {x.request_type for x in limits}
    for old in gateway.limits.tiers().get(name, []):
        if old.request_type not in kept:
            await gateway.write("limits", tier_key(name, old.request_type), None)
    for limit in limits:
        await gateway.write("limits", tier_key(name, limit.request_type), msgspec.json.encode(limit))
    return _tier(gateway.limits, name, limits)


@router.delete("/tiers/{name}", status_code=204, responses={**AUTH_ERRORS, **NOT_FOUND, **UNAVAILABLE},
               dependencies=[ADMIN])
async def delete_tier(name: TierPath, request: Request) -> Response:
    """Remove a tier's limits; its members stay assigned and get the default (or their own limits)."""
    gateway = request.app.state.gateway
    limits = _limits_of(gateway.limits, name)
    if not limits:
        raise HTTPException(404, f"tier {name!r} has no limits (only members)")
    for limit in limits:
        await gateway.write("limits", tier_key(name, limit.request_type), None)
    return Response(status_code=204)


@router.put("/tiers/{name}/members/{user_id}", response_model=TierMember,
            responses={**AUTH_ERRORS, **NOT_FOUND, **UNAVAILABLE}, dependencies=[ADMIN])
async def put_member(name: TierPath, user_id: UserIdPath, request: Request) -> TierMember:
    """Make the user (any user id of the request stream) a member of the tier, leaving its previous tier."""
    gateway = request.app.state.gateway
    if not _limits_of(gateway.limits, name):
        raise HTTPException(404, f"tier {name!r} has no limits; PUT /tiers/{name} first")
    member = TierMembership(user_id=user_id, tier=name)
    await gateway.write("limits", member_key(user_id), msgspec.json.encode(member))
    return TierMember(user_id=user_id, tier=name)


@router.delete("/tiers/{name}/members/{user_id}", status_code=204,
               responses={**AUTH_ERRORS, **NOT_FOUND, **UNAVAILABLE}, dependencies=[ADMIN])
async def delete_member(name: TierPath, user_id: UserIdPath, request: Request) -> Response:
    """Remove the user from the tier: back to its own limit or the default."""
    gateway = request.app.state.gateway
    if gateway.limits.tier_of(user_id) != name:
        raise HTTPException(404, f"{user_id!r} is not in tier {name!r}")
    await gateway.write("limits", member_key(user_id), None)
    return Response(status_code=204)
