"""The console's per-app state (session signer, pulse reader, topic sources, templates) and its rendering.

Templates are Jinja2 with autoescaping on for every template, so anything user-controlled (user
ids, reasons, request types) is escaped wherever a page shows it; links to subjects are built with
:func:`subject_href`, which percent-encodes the path segment.
"""

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ratewarden.gateway.console.access import Refused, Viewer
from ratewarden.gateway.console.pulse_reader import PulseReader
from ratewarden.gateway.console.security import Signer, secret_of
from ratewarden.gateway.console.sources import Sources
from streams.settings import Settings

__all__ = ["Console", "STATIC", "console_of", "feature", "refused_page", "render", "subject_href", "when"]

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
NAV = (("overview", "Overview", "/console/"), ("flags", "Flags", "/console/flags"),
       ("bans", "Bans", "/console/bans"), ("limits", "Limits", "/console/limits"))


def when(ts: float | None) -> str:
    """A timestamp as UTC text (``2026-12-07 09:12:03``); "" for none."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def share(value: float | None) -> str:
    return "unknown" if value is None else f"{100 * value:.1f}%"


def feature(value, name: str = "") -> str:
    """A feature of a flag as the pages show it: shares in per cent, other fractions to two places."""
    if value is None:
        return "unknown"
    if name.endswith("_share"):
        return share(value)
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def subject_href(subject: str, kind: str = "ip") -> str:
    """The console page of an address (``/console/ip/...``), a network (``/console/network/addr/len``) or a user."""
    if kind == "user":
        return "/console/users/" + quote(subject, safe="")
    if kind == "network" or "/" in subject:
        address, _, prefix = subject.partition("/")
        return f"/console/network/{quote(address, safe=':.')}/{quote(prefix, safe='')}"
    return "/console/ip/" + quote(subject, safe=":.")


class Console:
    """One gateway app's console: created by ``ratewarden.gateway.console.install``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        console = settings.console
        self.signer = Signer(secret_of(console.console_secret), console.console_session_max_age)
        self.pulse = PulseReader(settings)
        self.sources = Sources(settings)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                                     undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(when=when, share=share, feature=feature, href=subject_href)
        self.templates.globals.update(nav=NAV)

    async def stop(self) -> None:
        await self.pulse.stop()


def console_of(request: Request) -> Console:
    return request.app.state.console


def render(request: Request, template: str, viewer: Viewer | None, code: int = 200,
           headers: dict[str, str] | None = None, **context) -> HTMLResponse:
    """A page (or a fragment) of the console; ``viewer`` None for pages shown before a login."""
    html = console_of(request).templates.get_template(template).render(viewer=viewer, now=time.time(), **context)
    return HTMLResponse(html, code, headers)


def refused_page(request: Request, exc: Refused) -> HTMLResponse:
    """The HTML answer to a refused console request (401 with a link to the login page)."""
    if exc.status >= 500 or exc.status == 400:
        logger.info("console: %s %s answered %d: %s", request.method, request.url.path, exc.status, exc.message)
    headers = dict(exc.headers)
    if exc.status == 401 and request.headers.get("hx-request"):
        headers["HX-Redirect"] = "/console/login"  # a polled fragment whose session ended: htmx goes to the login
    return render(request, "refused.html", None, exc.status, headers, status=exc.status, message=exc.message)
