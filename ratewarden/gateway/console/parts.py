"""The overview's live parts: HTML fragments htmx polls, and the JSON the charts draw.

``/console/parts/overview`` (every second): decisions counted, per second by verdict, the throttled and
blocked shares, the users refused most. ``/console/parts/health`` (every few seconds): the limiter
group's lag, the workers that serve history, the pulse reader's state. ``/console/data/overview.json``:
decisions per second by verdict over the last hour, and flags per rule per analytics window.
"""

import logging
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from ratewarden.gateway.console.access import Viewer, viewer
from ratewarden.gateway.console.web import Console, console_of, render

__all__ = ["flags_per_rule", "overview_numbers", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False)
#: Analytics windows the flags chart shows.
FLAG_WINDOWS = 60


def overview_numbers(console: Console) -> dict:
    """What the live fragment shows, from the pulse reader's counts (starting the reader if need be)."""
    console.pulse.ensure_started()
    pulse, now = console.pulse, time.time()
    counts = pulse.counts
    return {
        "total": counts.total, "by_verdict": dict(counts.by_verdict), "rates": counts.rates(now),
        "shares": counts.shares(now), "top_refused": counts.top_refused(now), "since": pulse.started_at,
        "pulse_running": pulse.running, "pulse_errors": pulse.errors + pulse.decode_errors,
    }


def flags_per_rule(flags, windows: int = FLAG_WINDOWS) -> dict[str, list]:
    """``{"t": window starts, rule: flags in each window, ...}`` for the newest ``windows`` windows."""
    starts = sorted({f.window_start for f in flags})[-windows:]
    index = {start: i for i, start in enumerate(starts)}
    out: dict[str, list] = {"t": starts}
    for flag in flags:
        i = index.get(flag.window_start)
        if i is None:
            continue
        for rule in flag.rules:
            out.setdefault(rule, [0] * len(starts))[i] += 1
    return out


@router.get("/parts/overview")
async def overview_part(request: Request, who: Viewer = Depends(viewer)) -> HTMLResponse:
    return render(request, "parts/overview.html", who, **overview_numbers(console_of(request)))


@router.get("/parts/health")
async def health_part(request: Request, who: Viewer = Depends(viewer)) -> HTMLResponse:
    """Consumer lag and worker health as far as the gateway can tell cheaply; "unknown" where it cannot."""
    console, gateway = console_of(request), request.app.state.gateway
    owners = sorted(gateway.history.owners.values(), key=lambda o: o.partition)
    workers = sorted({o.worker for o in owners})
    return render(request, "parts/health.html", who, lag=await console.sources.lag(), owners=owners,
                  workers=workers, partitions=gateway.partitions, failure=gateway.failure,
                  pulse=console.pulse)


@router.get("/data/overview.json")
async def overview_data(request: Request, who: Viewer = Depends(viewer)) -> JSONResponse:
    """The charts' data: read by the console's own script (no inline data: the CSP forbids inline scripts)."""
    console = console_of(request)
    console.pulse.ensure_started()
    flags = await console.sources.flags()
    return JSONResponse({"decisions": console.pulse.counts.series(time.time()),
                         "flags": None if flags is None else flags_per_rule(flags)})
