"""The gateway's web console under ``/console`` (docs/console.md): server-rendered pages for analysts and
admins, htmx for the live parts, charts drawn by a vendored uPlot from JSON.

:func:`install` adds it to the gateway's FastAPI app: the routes (none in the OpenAPI document), the
static files, the security headers on every console answer and the HTML page for refusals. The
pulse reader it owns starts on the first console view; :meth:`Console.stop` ends it with the gateway.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from ratewarden.gateway.console import actions, login, pages, parts, subjects
from ratewarden.gateway.console.access import ConsoleHeaders, Refused
from ratewarden.gateway.console.web import STATIC, Console, refused_page

__all__ = ["Console", "install"]

logger = logging.getLogger(__name__)


def install(app: FastAPI) -> Console | None:
    """Serve the console from ``app`` (whose ``state.gateway`` is set); None when the settings turn it off."""
    settings = app.state.gateway.settings
    if not settings.console_enabled:
        logger.info("console: off (RATEWARDEN_CONSOLE_ENABLED=false)")
        return None
    console = app.state.console = Console(settings)
    app.add_middleware(ConsoleHeaders)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return refused_page(request, exc)

    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    for module in (login, pages, parts, subjects, actions):
        app.include_router(module.router)
    return console
