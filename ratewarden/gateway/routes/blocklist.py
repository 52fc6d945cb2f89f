"""GET /blocklist, PUT|DELETE /blocklist/{ip}: the compacted blocklist topic the limiter enforces."""

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response

from ratewarden.gateway.auth import require
from ratewarden.gateway.models import BlockBody, BlockEntry, BlockList, IpPath
from ratewarden.gateway.routes import AUTH_ERRORS, NOT_FOUND, BODY_ERRORS, UNAVAILABLE
from schemas.limits import BlocklistEntry
from streams.tables import blocklist_key

__all__ = ["router"]

router = APIRouter(tags=["blocklist"])
ADMIN = require("admin")


def _out(e: BlocklistEntry) -> BlockEntry:
    expires = None if e.ttl is None else e.start + e.ttl
    return BlockEntry(subject=e.subject, kind=e.kind, reason=e.reason, start=e.start, ttl=e.ttl, expires_at=expires)


@router.get("/blocklist", response_model=BlockList, responses=AUTH_ERRORS, dependencies=[require("analyst", "admin")])
async def list_blocklist(request: Request) -> BlockList:
    """Every entry (IPs, and users blocked from the CLI), including expired ones not yet removed."""
    entries = sorted(request.app.state.gateway.blocklist.entries(), key=lambda e: (e.kind, e.subject))
    return BlockList(entries=[_out(e) for e in entries])


@router.put(
    "/blocklist/{ip}", response_model=BlockEntry, responses={**AUTH_ERRORS, **BODY_ERRORS, **UNAVAILABLE},
    dependencies=[ADMIN],
)
async def block_ip(ip: IpPath, body: BlockBody, request: Request) -> BlockEntry:
    """Block an IP from now (event time) for ``ttl`` seconds, or until removed."""
    gateway = request.app.state.gateway
    entry = BlocklistEntry(subject=ip, kind="ip", reason=body.reason, start=gateway.clock(), ttl=body.ttl)
    await gateway.write("blocklist", blocklist_key("ip", ip), msgspec.json.encode(entry))
    return _out(entry)


@router.delete(
    "/blocklist/{ip}", status_code=204, responses={**AUTH_ERRORS, **NOT_FOUND, **UNAVAILABLE}, dependencies=[ADMIN]
)
async def unblock_ip(ip: IpPath, request: Request) -> Response:
    gateway = request.app.state.gateway
    if not any(e.kind == "ip" and e.subject == ip for e in gateway.blocklist.entries()):
        raise HTTPException(404, f"{ip} is not on the blocklist")
    await gateway.write("blocklist", blocklist_key("ip", ip), None)
    return Response(status_code=204)
