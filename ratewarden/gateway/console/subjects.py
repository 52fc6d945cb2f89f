"""The console's pages of one subject: an address (``/console/ip/{address}``), a network
(``/console/network/{address}/{prefix}``) and a user (``/console/users/{user_id}``).

An address or network page shows its analytics windows over time (merged from the partials on
``ip-features``: ``ratewarden.gateway.console.windows``; a chart of them from
``/console/data/ip/{address}``), the rules that fired and the evidence (``ip-flags``), its bans with the
ban agent's repeat count (``ban-offences``), and its decisions among the last ones the pulse reader kept. A user
page shows the history ``GET /requests/{user_id}`` serves (the same read), the limits that apply
and the refused share of that history.
"""

import ipaddress
import logging
import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from agents.network_bans import normalize_cidr
from agents.rules import limit_key
from ratewarden.gateway.console.access import Refused, Viewer, viewer
from ratewarden.gateway.console.web import console_of, render, subject_href
from ratewarden.gateway.console.windows import window_series
from ratewarden.gateway.history import HistoryUnavailable
from ratewarden.gateway.net import in_networks, normalize_ip, parse_networks
from schemas.users import ID_PATTERN

__all__ = ["RULE_EVIDENCE", "data_href", "router", "subject_ip", "subject_network"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False)
#: Decisions of the subject shown from the pulse reader's recent ones.
RECENT_SHOWN = 50
#: The features each rule reads (docs/analytics.md): shown as the reason it fired.
RULE_EVIDENCE = {
    "flood": ("requests", "requests_per_user", "rate"),
    "credential_stuffing": ("users", "login_share", "failure_share"),
    "low_and_slow": ("users", "login_share", "requests"),
    "distributed_stuffing": ("victim_users", "users", "login_share"),
    "account_rotation": ("users", "new_users", "new_user_share", "requests_per_user"),
    "scraper": ("requests", "top_type", "top_type_share"),
    "hammering": ("requests", "refused_share", "throttled", "blocked"),
}
_USER_ID = re.compile(ID_PATTERN)


def subject_ip(address: str) -> str:
    ip = normalize_ip(address)
    if ip is None:
        raise Refused(404, f"{address!r} is not an IPv4 or IPv6 address.")
    return ip


def subject_network(address: str, prefix: str) -> str:
    try:
        return normalize_cidr(f"{address}/{prefix}")
    except ValueError as exc:
        raise Refused(404, str(exc)) from None


def _rules(flags) -> list[dict]:
    """Each rule that fired, with the windows it fired in and the features that made it fire."""
    rules: dict[str, dict] = {}
    for flag in flags:  # newest first
        for name in flag.rules:
            rule = rules.setdefault(name, {"name": name, "windows": 0, "last": flag.window_start,
                                           "severity": flag.severity, "flag": flag})
            rule["windows"] += 1
            if flag.score > rule["flag"].score:
                rule["flag"] = flag
    for rule in rules.values():
        features = rule["flag"].features
        rule["evidence"] = [(f, getattr(features, f, None)) for f in RULE_EVIDENCE.get(rule["name"], ())]
    return sorted(rules.values(), key=lambda r: r["name"])


async def _subject_page(request: Request, who: Viewer, subject: str, kind: str) -> HTMLResponse:
    console, gateway = console_of(request), request.app.state.gateway
    console.pulse.ensure_started()
    network = ipaddress.ip_network(subject, strict=False)
    read = await console.sources.flags()
    flags = sorted((f for f in read or [] if f.ip == subject), key=lambda f: -f.window_start)
    around = sorted({f.ip for f in read or [] if f.kind == "network" and f.ip != subject
                     and in_networks(str(network.network_address), parse_networks(f.ip))})
    bans = [e for e in gateway.blocklist.entries() if e.kind in ("ip", "network") and _overlaps(e.subject, network)]
    offences = await console.sources.offences()
    decisions = [d for d in console.pulse.recent_decisions() if in_networks(d.ip, [network])][:RECENT_SHOWN]
    windows = await console.sources.windows(subject, kind, flags)
    title = f"IP {subject}" if kind == "ip" else f"Network {subject}"
    allowlisted = gateway.allowlist.contains(subject)  # the static seed and the allowlist topic
    return render(request, "subject.html", who, title=title, subject=subject, kind=kind, flags=flags,
                  unknown=read is None, rules=_rules(flags), strongest=max(flags, key=lambda f: f.score, default=None),
                  networks=around, bans=bans, offence=None if offences is None else offences.get(subject),
                  offences_unknown=offences is None, decisions=decisions, allowlisted=allowlisted,
                  action=request.url.path, windows=windows, chart_src=data_href(subject, kind))


def data_href(subject: str, kind: str) -> str:
    """The JSON of a subject's windows chart: ``/console/data/ip/...`` or ``/console/data/network/.../...``."""
    return "/console/data" + subject_href(subject, kind).removeprefix("/console")


async def _windows_data(request: Request, subject: str, kind: str) -> JSONResponse:
    """``{"windows": {"t": [...], "requests": [...], "users": [...]}}``, ``{"windows": null}`` when unknown."""
    read = await console_of(request).sources.windows(subject, kind)
    return JSONResponse({"windows": None if read is None else window_series(read.rows)})


def _overlaps(subject: str, network) -> bool:
    """Whether a ban's subject (address or CIDR) covers or lies inside ``network``."""
    try:
        other = ipaddress.ip_network(subject, strict=False)
    except ValueError:
        return False
    return other.version == network.version and (other.subnet_of(network) or network.subnet_of(other))


@router.get("/ip/{address}")
async def ip_page(address: str, request: Request, who: Viewer = Depends(viewer)) -> HTMLResponse:
    return await _subject_page(request, who, subject_ip(address), "ip")


@router.get("/network/{address}/{prefix}")
async def network_page(address: str, prefix: str, request: Request, who: Viewer = Depends(viewer)) -> HTMLResponse:
    return await _subject_page(request, who, subject_network(address, prefix), "network")


@router.get("/data/ip/{address}")
async def ip_data(address: str, request: Request, who: Viewer = Depends(viewer)) -> JSONResponse:
    return await _windows_data(request, subject_ip(address), "ip")


@router.get("/data/network/{address}/{prefix}")
async def network_data(address: str, prefix: str, request: Request, who: Viewer = Depends(viewer)) -> JSONResponse:
    return await _windows_data(request, subject_network(address, prefix), "network")


def user_id_of(user_id: str) -> str:
    if len(user_id) > 128 or not _USER_ID.match(user_id):
        raise Refused(404, "Not a user id: 1 to 128 printable ASCII characters without space or slash.")
    return user_id


@router.get("/users/{user_id}")
async def user_page(user_id: str, request: Request, who: Viewer = Depends(viewer)) -> HTMLResponse:
    """The user's recent requests (newest first), the limits that apply to it and its refused share."""
    user_id = user_id_of(user_id)
    gateway = request.app.state.gateway
    try:
        page = await gateway.history.read(user_id, 100, None)
        history, problem = page["requests"], None
    except (HistoryUnavailable, KeyError, TypeError) as exc:
        history, problem = [], str(exc) or repr(exc)
    refused = sum(1 for item in history if item.get("verdict") != "allow")
    book = gateway.limits
    tier = book.tier_of(user_id)
    own = book.get(limit_key(user_id))
    tier_limit = book.get_tier(tier) if tier else None
    typed = sorted((x for x in book if x.user_id == user_id and x.request_type is not None),
                   key=lambda x: x.request_type)
    governing = own or tier_limit or book.default
    blocked = [e for e in gateway.blocklist.entries() if e.kind == "user" and e.subject == user_id]
    return render(request, "user.html", who, user_id=user_id, history=history, problem=problem,
                  refused=refused, refused_share=refused / len(history) if history else None, own=own, tier=tier,
                  tier_limit=tier_limit, typed=typed, governing=governing, default=book.default, blocked=blocked,
                  api_user=gateway.users.get(user_id), algorithms=("fixed", "sliding", "gcra"))
