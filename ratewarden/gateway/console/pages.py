"""The console's list pages: ``/console/`` (overview), ``/console/flags``, ``/console/bans``, ``/console/limits``.

Each reads what the gateway already holds (the blocklist and limits tables) or the console's sources
(flags from ``ip-flags``, the pulse of decisions); the live parts of the overview are fragments
(``ratewarden.gateway.console.parts``) polled by htmx.
"""

import logging
import time
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from ratewarden.gateway.console.access import Refused, Viewer, viewer
from ratewarden.gateway.console.parts import overview_numbers
from ratewarden.gateway.console.sources import SEVERITIES, group_flags, select_flags
from ratewarden.gateway.console.web import console_of, render

__all__ = ["parse_time", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False)
#: A ban ending within this many seconds is shown as expiring.
EXPIRING = 600.0
ALGORITHMS = ("fixed", "sliding", "gcra")


def parse_time(text: str | None, name: str) -> float | None:
    """A query's time: empty, seconds since the epoch, or an ISO 8601 date and time (UTC unless it says)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Refused(400, f"{name}: {text!r} is neither seconds since the epoch nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@router.get("/")
async def overview(request: Request, who: Viewer = Depends(viewer)) -> HTMLResponse:
    return render(request, "overview.html", who, **overview_numbers(console_of(request)))


@router.get("/flags")
async def flags(request: Request, who: Viewer = Depends(viewer), rule: str = "", severity: str = "",
                since: str = "", until: str = "") -> HTMLResponse:
    """Flagged addresses and networks of the tail of ``ip-flags``, one row per subject, filtered."""
    if severity and severity not in SEVERITIES:
        raise Refused(400, f"severity: one of {', '.join(SEVERITIES)}")
    start, end = parse_time(since, "since"), parse_time(until, "until")
    read = await console_of(request).sources.flags()
    chosen = [] if read is None else select_flags(read, rule or None, severity or None, start, end)
    rules = sorted({r for f in read or [] for r in f.rules})
    return render(request, "flags.html", who, subjects=group_flags(chosen), unknown=read is None, rules=rules,
                  severities=SEVERITIES, query={"rule": rule, "severity": severity, "since": since, "until": until})


def _ban_rows(entries, now: float) -> tuple[list[dict], list[dict]]:
    """(active, ended) bans as rows, soonest end first; ended ones still listed until tombstoned."""
    active, ended = [], []
    for entry in entries:
        expires = None if entry.ttl is None else entry.start + entry.ttl
        row = {"entry": entry, "expires": expires, "automatic": entry.reason.startswith("auto:"),
               "left": None if expires is None else expires - now}
        row["expiring"] = row["left"] is not None and row["left"] <= EXPIRING
        (ended if expires is not None and expires <= now else active).append(row)
    key = lambda row: (row["expires"] is None, row["expires"] or 0, row["entry"].subject)  # noqa: E731
    return sorted(active, key=key), sorted(ended, key=key)


@router.get("/bans")
async def bans(request: Request, who: Viewer = Depends(viewer)) -> HTMLResponse:
    """Active and expiring bans of addresses, networks and users, manual and automatic."""
    active, ended = _ban_rows(request.app.state.gateway.blocklist.entries(), time.time())
    return render(request, "bans.html", who, active=active, ended=ended)


@router.get("/limits")
async def limits(request: Request, who: Viewer = Depends(viewer)) -> HTMLResponse:
    """The limits in force: the default, each user's own, each tier's."""
    book = request.app.state.gateway.limits
    own = sorted(book, key=lambda x: (x.user_id, x.request_type or ""))
    tiers = [(name, limits, book.members(name)) for name, limits in sorted(book.tiers().items())]
    return render(request, "limits.html", who, default=book.default, limits=own, tiers=tiers,
                  algorithms=ALGORITHMS)
