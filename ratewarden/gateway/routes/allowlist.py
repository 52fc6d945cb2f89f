"""GET /allowlist, PUT|DELETE /allowlist/{address} and /allowlist/{address}/{prefix}: the analytics'
allow-list, the compacted ``allowlist`` topic (``schemas.allowlist``) the workers follow live.

An allow-listed subject's flags are reported (``allowlisted: true``) and never become automatic
bans; manual bans and the limits still apply. A network is addressed as its CIDR reads, address and
prefix length as two path segments (``/allowlist/2001:db8:1:2::/64``); an address alone is its /32
or /128. Entries are keyed by the normalised CIDR, which ``GET /allowlist`` lists and DELETE
matches. The workers' ``RATEWARDEN_ALLOWLIST_CIDRS`` is a static seed: listed with ``static: true``,
and not removable here (409). :func:`allow` is the one write, shared with the web console's
``form#allow``.
"""

import logging

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ratewarden.gateway.auth import require
from ratewarden.gateway.models import TEXT_PATTERN, NetworkAddressPath, PrefixPath, Problem
from ratewarden.gateway.routes import AUTH_ERRORS, BODY_ERRORS, NOT_FOUND, UNAVAILABLE, path_cidr
from schemas.allowlist import AllowlistEntry
from schemas.users import User

__all__ = ["AllowBody", "AllowEntry", "AllowList", "allow", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["allowlist"])
ADMIN = require("admin")
STATIC = {409: {"model": Problem, "description": "part of the static seed (RATEWARDEN_ALLOWLIST_CIDRS): "
                                                 "not removable at runtime"}}


class AllowBody(BaseModel):
    """The optional body of ``PUT /allowlist/...``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field("manual", min_length=1, max_length=128, pattern=TEXT_PATTERN)


class AllowEntry(BaseModel):
    network: str = Field(description="the normalised CIDR (an address is its /32 or /128)")
    reason: str
    added_at: float | None = Field(description="wall seconds; none for the static seed")
    added_by: str = Field(description="the API user or `cli:<login>` who added it; empty for the static seed")
    static: bool = Field(description="from RATEWARDEN_ALLOWLIST_CIDRS: not removable at runtime")


class AllowList(BaseModel):
    entries: list[AllowEntry]


def _out(entry: AllowlistEntry, static: bool = False) -> AllowEntry:
    return AllowEntry(network=entry.network, reason=entry.reason, added_at=None if static else entry.added_at,
                      added_by=entry.added_by, static=static)


async def allow(request: Request, cidr: str, reason: str, added_by: str) -> AllowEntry:
    """Write ``cidr`` (normalised) to the allow-list topic and wait until this gateway's table has it."""
    gateway = request.app.state.gateway
    entry = AllowlistEntry(network=cidr, reason=reason, added_at=gateway.clock(), added_by=added_by)
    await gateway.write("allowlist", cidr, msgspec.json.encode(entry))
    logger.info("%s allow-listed %s (%s)", added_by, cidr, reason)
    return _out(entry)


async def disallow(request: Request, cidr: str) -> Response:
    gateway = request.app.state.gateway
    allowlist = gateway.allowlist
    if allowlist.entry(cidr) is None:
        if allowlist.is_static(cidr):
            raise HTTPException(409, f"{cidr} is in the static seed (RATEWARDEN_ALLOWLIST_CIDRS of the analytics "
                                     "workers, read when they start): it cannot be removed at runtime")
        raise HTTPException(404, f"{cidr} is not on the runtime allow-list")
    await gateway.write("allowlist", cidr, None)
    return Response(status_code=204)


@router.get("/allowlist", response_model=AllowList, responses=AUTH_ERRORS, dependencies=[require("analyst", "admin")])
async def list_allowlist(request: Request) -> AllowList:
    """The static seed (``static: true``), then the runtime entries, by network."""
    allowlist = request.app.state.gateway.allowlist
    return AllowList(entries=[_out(e, True) for e in allowlist.static_entries()]
                     + [_out(e) for e in allowlist.entries()])


@router.put("/allowlist/{address}", response_model=AllowEntry,
            responses={**AUTH_ERRORS, **BODY_ERRORS, **UNAVAILABLE}, dependencies=[ADMIN])
async def allow_address(address: NetworkAddressPath, request: Request, body: AllowBody | None = None,
                        user: User = ADMIN) -> AllowEntry:
    """Allow-list an address (its /32 or /128): its flags are reported, never banned automatically. The
    workers apply it live; an automatic ban already in force is not lifted (``DELETE /blocklist/...``)."""
    return await allow(request, path_cidr(address), (body or AllowBody()).reason, user.user_id)


@router.put("/allowlist/{address}/{prefix}", response_model=AllowEntry,
            responses={**AUTH_ERRORS, **BODY_ERRORS, **UNAVAILABLE}, dependencies=[ADMIN])
async def allow_network(address: NetworkAddressPath, prefix: PrefixPath, request: Request,
                        body: AllowBody | None = None, user: User = ADMIN) -> AllowEntry:
    """Allow-list a network (e.g. ``192.0.2.0/24``; host bits are cleared): its addresses' flags, and the
    flags of networks overlapping it, are reported, never banned automatically."""
    return await allow(request, path_cidr(address, prefix), (body or AllowBody()).reason, user.user_id)


@router.delete("/allowlist/{address}", status_code=204,
               responses={**AUTH_ERRORS, **NOT_FOUND, **STATIC, **UNAVAILABLE}, dependencies=[ADMIN])
async def disallow_address(address: NetworkAddressPath, request: Request) -> Response:
    """Remove an address's runtime entry: its next flags may ban it again."""
    return await disallow(request, path_cidr(address))


@router.delete("/allowlist/{address}/{prefix}", status_code=204,
               responses={**AUTH_ERRORS, **NOT_FOUND, **STATIC, **UNAVAILABLE}, dependencies=[ADMIN])
async def disallow_network(address: NetworkAddressPath, prefix: PrefixPath, request: Request) -> Response:
    """Remove a network's runtime entry, given in any spelling of it (``192.0.2.7/24`` is ``192.0.2.0/24``)."""
    return await disallow(request, path_cidr(address, prefix))
