"""The gateway's ASGI app: the hot routes (:mod:`ratewarden.gateway.hot`) in front of the FastAPI
application (routes, the body size limit, error answers, /healthz and /metrics)."""

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ratewarden.gateway.auth import auth_limiter, require
from ratewarden.gateway.console import install as install_console
from ratewarden.gateway.hot import HotRoutes
from ratewarden.gateway.inline import Inline
from ratewarden.gateway.models import Problem
from ratewarden.gateway.routes import advice, allowlist, blocklist, limits, reports, requests, rls, tiers, users, whatif
from ratewarden.gateway.runtime import Gateway, Unavailable
from ratewarden.processes import freeze_startup_heap
from streams.loop_lag import LoopLagProbe
from streams.settings import Settings, get_settings

__all__ = ["create_app", "BodyLimit"]

logger = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, by Content-Length or as it streams in."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        detail = f"request body is larger than {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                response = JSONResponse({"detail": detail}, 413, {"Connection": "close"})
                return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, detail)  # answered by the app's HTTPException handler
            return message

        await self.app(scope, limited, send)


def create_app(settings: Settings | None = None, gateway: Gateway | None = None) -> HotRoutes:
    """The gateway's ASGI app; its lifespan starts and stops ``gateway`` (Kafka clients and tables).

    Without arguments it reads the settings from the environment and makes its own Gateway.
    """
    settings = settings or get_settings()
    gateway = gateway or Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await gateway.start()
        grpc_server, probe = None, LoopLagProbe()
        try:
            probe.start()
            if gateway.settings.rls_grpc_port is not None:  # Envoy's rate limit service (docs/rls.md)
                from ratewarden.rls.server import start_rls_server

                grpc_server, gateway.grpc_port = await start_rls_server(
                    gateway.settings, gateway.rls, gateway.users, app.state.auth_limiter)
                logger.info("rate limit service (gRPC) on %s:%d", gateway.settings.rls_grpc_host, gateway.grpc_port)
            if getattr(app.state, "freeze_heap", False):  # a gateway process of its own (serve), not a test's thread
                freeze_startup_heap()
            yield
        finally:
            probe.stop()
            if grpc_server is not None:
                await grpc_server.stop(1.0)
            if getattr(app.state, "console", None) is not None:  # its pulse reader, if a view started it
                await app.state.console.stop()
            await gateway.stop()

    app = FastAPI(
        title="ratewarden gateway",
        version="1.0",
        description="Submit requests to the streaming rate limiter and get the decision inline; read request "
        "histories and abuse reports; manage limits, users, the blocklist and the allow-list. "
        "Authenticate with `Authorization: Bearer KEY`.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.state.auth_limiter = auth_limiter(gateway.settings.gateway)
    app.state.inline = Inline(gateway)
    app.add_middleware(BodyLimit, max_bytes=settings.gateway_max_body_bytes)
    for module in (requests, limits, tiers, users, blocklist, allowlist, reports, rls, whatif, advice):
        app.include_router(module.router)
    install_console(app)  # /console: the web console (docs/console.md), not in the OpenAPI document

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422 body without the echoed input (which may be NaN, i.e. not JSON, or large)."""
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, 503, {"Retry-After": "1"})

    @app.get("/healthz", tags=["operations"], responses={503: {"model": Problem}})
    async def healthz() -> dict[str, str | int]:
        """Liveness and readiness (no key needed)."""
        if gateway.failure is not None:
            raise HTTPException(503, f"a gateway task failed: {gateway.failure!r}")
        return {"status": "ok", "users": len(gateway.users), "history_owners": len(gateway.history.owners)}

    @app.get(
        "/metrics", tags=["operations"], response_class=Response, dependencies=[require("analyst", "admin")],
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
                   401: {"model": Problem}, 403: {"model": Problem}},
    )
    async def metrics() -> Response:
        """Prometheus metrics (an analyst or admin key: Prometheus sends it as a bearer token)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return HotRoutes(app, gateway, app.state.inline, app.state.auth_limiter)
