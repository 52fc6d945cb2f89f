"""The console's forms that change state (admins only, each with its CSRF token; ``access.admin_form``).

Every write goes through the API route that does the same thing (``routes.blocklist``,
``routes.limits``, ``routes.allowlist``), called as a function: the same validation, the same record on the same
compacted topic, the same wait until this gateway's table has it. So a page shown after the 303
redirect already shows the change. The one write without a route of its own, lifting a user's ban
(bans page), is the same tombstone ``ratewarden blocklist remove`` writes, through ``Gateway.write``.
"""

import logging

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from ratewarden.gateway.console.access import Refused, admin_form
from ratewarden.gateway.console.subjects import subject_ip, subject_network, user_id_of
from ratewarden.gateway.console.web import subject_href
from ratewarden.gateway.models import BlockBody, LimitBody
from ratewarden.gateway.routes import allowlist, blocklist, limits
from ratewarden.gateway.routes import path_cidr
from ratewarden.gateway.routes.allowlist import AllowBody
from ratewarden.gateway.runtime import Unavailable
from streams.tables import blocklist_key

__all__ = ["AUTO_REASON", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False)
#: The reasons of the analytics' automatic bans start so (``agents.blocklist.next_ban``).
AUTO_REASON = "auto:"


async def _apply(write) -> None:
    """Await a route's write; its refusals become console pages (400, 404, 503)."""
    try:
        await write
    except (ValidationError, RequestValidationError) as exc:
        raise Refused(400, "; ".join(str(e.get("msg")) for e in exc.errors())) from None
    except HTTPException as exc:
        raise Refused(exc.status_code, str(exc.detail)) from None
    except Unavailable as exc:
        raise Refused(503, str(exc), {"Retry-After": "1"}) from None


def _number(fields: dict[str, str], name: str, kind=float, default=None):
    text = fields.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise Refused(400, f"{name}: {text!r} is not a number") from None


def _block_body(fields: dict[str, str]) -> BlockBody:
    try:
        return BlockBody(reason=fields.get("reason", "").strip() or "manual", ttl=_number(fields, "ttl"))
    except ValidationError as exc:
        raise Refused(400, "; ".join(str(e["msg"]) for e in exc.errors())) from None


def _network(address: str, prefix: str) -> tuple[str, str, int]:
    """(CIDR, network address, prefix length) of a network given in any spelling; 404 page if it is none."""
    cidr = subject_network(address, prefix)
    network, length = cidr.split("/")
    return cidr, network, int(length)


def _done(where: str) -> RedirectResponse:
    return RedirectResponse(where, 303)


@router.post("/ip/{address}/ban")
async def ban_ip(address: str, request: Request) -> RedirectResponse:
    who, fields = await admin_form(request)
    ip = subject_ip(address)
    await _apply(blocklist.block_ip(ip, _block_body(fields), request))
    logger.info("console: %s banned %s", who.user_id, ip)
    return _done(subject_href(ip))


@router.post("/ip/{address}/unban")
async def unban_ip(address: str, request: Request) -> RedirectResponse:
    who, _ = await admin_form(request)
    ip = subject_ip(address)
    await _apply(blocklist.unblock_ip(ip, request))
    logger.info("console: %s lifted the ban of %s", who.user_id, ip)
    return _done(subject_href(ip))


@router.post("/network/{address}/{prefix}/ban")
async def ban_network(address: str, prefix: str, request: Request) -> RedirectResponse:
    who, fields = await admin_form(request)
    cidr, network, length = _network(address, prefix)
    await _apply(blocklist.block_network(network, length, _block_body(fields), request))
    logger.info("console: %s banned %s", who.user_id, cidr)
    return _done(subject_href(cidr, "network"))


@router.post("/network/{address}/{prefix}/unban")
async def unban_network(address: str, prefix: str, request: Request) -> RedirectResponse:
    who, _ = await admin_form(request)
    cidr, network, length = _network(address, prefix)
    await _apply(blocklist.unblock_network(network, length, request))
    logger.info("console: %s lifted the ban of %s", who.user_id, cidr)
    return _done(subject_href(cidr, "network"))


@router.post("/ip/{address}/allow")
@router.post("/network/{address}/{prefix}/allow")
async def allow(request: Request, address: str, prefix: str | None = None) -> RedirectResponse:
    """Allow-list the subject through ``PUT /allowlist/...``'s code (``routes.allowlist.allow``), then lift its
    automatic ban, if one is in force, as ``#unban`` does (a manual ban stays: allow-listing stops the
    analytics from banning, not an operator)."""
    who, fields = await admin_form(request)
    if prefix is None:
        subject, kind = subject_ip(address), "ip"
        cidr = path_cidr(subject)
    else:
        subject, network, length = _network(address, prefix)
        kind, cidr = "network", path_cidr(network, length)
    reason = fields.get("reason", "").strip() or "console"
    await _apply(allowlist.allow(request, cidr, _allow_reason(reason), who.user_id))
    lifted = await _lift_automatic(request, kind, subject)
    logger.info("console: %s allow-listed %s%s", who.user_id, cidr, " and lifted its automatic ban" if lifted else "")
    return _done(subject_href(subject, kind))


def _allow_reason(reason: str) -> str:
    try:
        return AllowBody(reason=reason).reason
    except ValidationError as exc:
        raise Refused(400, "; ".join(str(e["msg"]) for e in exc.errors())) from None


async def _lift_automatic(request: Request, kind: str, subject: str) -> bool:
    """Tombstone the subject's own ban if the analytics wrote it (``auto:`` reason); whether one was lifted."""
    gateway = request.app.state.gateway
    if not any(e.kind == kind and e.subject == subject and e.reason.startswith(AUTO_REASON)
               for e in gateway.blocklist.entries()):
        return False
    if kind == "ip":
        await _apply(blocklist.unblock_ip(subject, request))
    else:
        network, length = subject.split("/")
        await _apply(blocklist.unblock_network(network, int(length), request))
    return True


@router.post("/bans/lift")
async def lift(request: Request) -> RedirectResponse:
    """Lift a ban listed on the bans page (``kind`` ip, network or user, and its ``subject``)."""
    who, fields = await admin_form(request)
    kind, subject = fields.get("kind", ""), fields.get("subject", "")
    if kind == "ip":
        await _apply(blocklist.unblock_ip(subject_ip(subject), request))
    elif kind == "network":
        _, network, length = _network(*subject.partition("/")[::2])
        await _apply(blocklist.unblock_network(network, length, request))
    elif kind == "user":
        gateway = request.app.state.gateway
        if not any(e.kind == "user" and e.subject == subject for e in gateway.blocklist.entries()):
            raise Refused(404, f"{subject} is not on the blocklist")
        await _apply(gateway.write("blocklist", blocklist_key("user", subject), None))
    else:
        raise Refused(400, "kind: one of ip, network, user")
    logger.info("console: %s lifted the %s ban of %s", who.user_id, kind, subject)
    return _done("/console/bans")


@router.post("/limits")
async def edit_limit(request: Request) -> RedirectResponse:
    """Set a user's limit (form ``#limit-edit``) through ``PUT /limits/{user_id}``'s code; back to ``next``."""
    who, fields = await admin_form(request)
    user_id = user_id_of(fields.get("user_id", "").strip())
    body = {"limit": _number(fields, "limit", int), "window": _number(fields, "window", float, 60.0),
            "algorithm": fields.get("algorithm") or "fixed", "shadow": fields.get("shadow") in ("on", "true", "1"),
            "burst": _number(fields, "burst", int), "request_type": fields.get("request_type", "").strip() or None}
    try:
        limit = LimitBody(**body)
    except ValidationError as exc:
        raise Refused(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    await _apply(limits.put_limit(user_id, limit, request))
    logger.info("console: %s set the limit of %s", who.user_id, user_id)
    back = fields.get("next", "")
    return _done(back if back.startswith("/console/") and "//" not in back else "/console/limits")


@router.post("/limits/remove")
async def remove_limit(request: Request) -> RedirectResponse:
    """Remove a user's limit (of one request type, if given) through ``DELETE /limits/{user_id}``'s code."""
    who, fields = await admin_form(request)
    user_id = user_id_of(fields.get("user_id", "").strip())
    request_type = fields.get("request_type", "").strip() or None
    await _apply(limits.delete_limit(user_id, request, request_type))
    logger.info("console: %s removed the limit of %s", who.user_id, user_id)
    return _done("/console/limits")
