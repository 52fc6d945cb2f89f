"""GET /blocklist, PUT|DELETE /blocklist/{ip} and /blocklist/networks/{address}/{prefix}: the
compacted blocklist topic the limiter enforces.

A network is addressed as its CIDR reads, address and prefix length as two path segments
(``/blocklist/networks/2001:db8:1:2::/64``), so the OpenAPI document types both; it is stored
normalised (host bits cleared), which is the subject ``GET /blocklist`` lists and DELETE matches.
"""

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response

from ratewarden.gateway.auth import require
from ratewarden.gateway.models import BlockBody, BlockEntry, BlockList, IpPath, NetworkAddressPath, PrefixPath
from ratewarden.gateway.routes import AUTH_ERRORS, BODY_ERRORS, NOT_FOUND, UNAVAILABLE, path_cidr
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
    """Every entry (IPs, networks, and users blocked from the CLI), including expired ones not yet removed."""
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


@router.put(
    "/blocklist/networks/{address}/{prefix}", response_model=BlockEntry,
    responses={**AUTH_ERRORS, **BODY_ERRORS, **UNAVAILABLE}, dependencies=[ADMIN],
)
async def block_network(address: NetworkAddressPath, prefix: PrefixPath, body: BlockBody, request: Request) -> BlockEntry:
    """Block every address of a network (e.g. ``198.51.100.0/24``, ``2001:db8:1:2::/64``) from now (event
    time) for ``ttl`` seconds, or until removed: its requests are blocked as ``network_blocked`` (an
    exact IP ban of the address, if active, is reported first as ``ip_blocked``)."""
    cidr = path_cidr(address, prefix)
    gateway = request.app.state.gateway
    entry = BlocklistEntry(subject=cidr, kind="network", reason=body.reason, start=gateway.clock(), ttl=body.ttl)
    await gateway.write("blocklist", blocklist_key("network", cidr), msgspec.json.encode(entry))
    return _out(entry)


@router.delete(
    "/blocklist/networks/{address}/{prefix}", status_code=204,
    responses={**AUTH_ERRORS, **NOT_FOUND, **UNAVAILABLE}, dependencies=[ADMIN],
)
async def unblock_network(address: NetworkAddressPath, prefix: PrefixPath, request: Request) -> Response:
    """Lift the ban of a network, given in any spelling of it (``198.51.100.7/24`` is ``198.51.100.0/24``)."""
    cidr = path_cidr(address, prefix)
    gateway = request.app.state.gateway
    subjects = gateway.blocklist.network_subjects(cidr)  # as written; the CLI and this API write it normalised
    if not subjects:
        raise HTTPException(404, f"{cidr} is not on the blocklist")
    for subject in subjects:
        await gateway.write("blocklist", blocklist_key("network", subject), None)
    return Response(status_code=204)
