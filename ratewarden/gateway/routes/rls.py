"""``POST /json``: Envoy's rate limit service call over HTTP, declared here for the OpenAPI document.

The hot routes (:class:`ratewarden.gateway.hot.HotRoutes`) answer it before FastAPI sees it, through
:func:`ratewarden.rls.json_api.json_call`; this declaration documents it (protojson in and out, as
envoyproxy/ratelimit's ``/json``) and serves the same answers if the app runs without the hot routes.
"""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ratewarden.gateway.auth import require
from ratewarden.gateway.models import Problem
from ratewarden.gateway.routes import AUTH_ERRORS, BODY_ERRORS
from ratewarden.rls.json_api import json_call
from ratewarden.rls.validation import Bounds
from schemas.users import User

__all__ = ["router"]

router = APIRouter(tags=["rate limit service"])


class _Protojson(BaseModel):
    model_config = ConfigDict(extra="allow")


class Entry(_Protojson):
    key: str
    value: str = ""


class Descriptor(_Protojson):
    entries: list[Entry]


class RlsJsonRequest(_Protojson):
    """A ``RateLimitRequest`` in protojson (lowerCamel or proto field names)."""

    domain: str
    descriptors: list[Descriptor]
    hitsAddend: int | None = Field(None, ge=0, description="hits to count for each descriptor (0 or absent: 1)")


class RlsJsonResponse(_Protojson):
    """A ``RateLimitResponse`` in protojson: ``overallCode``, one status per descriptor, headers to add."""

    overallCode: str | None = None
    statuses: list[dict[str, Any]] = []
    responseHeadersToAdd: list[dict[str, Any]] = []


class RlsError(BaseModel):
    error: str


@router.post(
    "/json",
    response_model=RlsJsonResponse,
    responses={
        200: {"description": "overallCode OK"},
        429: {"model": RlsJsonResponse | Problem,
              "description": "overallCode OVER_LIMIT, or too many failed authentications from this address"},
        400: {"model": RlsError | Problem, "description": "not a RateLimitRequest, or outside the bounds"},
        500: {"model": RlsError, "description": "overallCode UNKNOWN, or the engine failed"},
        401: AUTH_ERRORS[401], 403: AUTH_ERRORS[403], 413: BODY_ERRORS[413],
    },
    summary="Envoy's ShouldRateLimit over HTTP (envoyproxy/ratelimit's /json; docs/rls.md)",
)
async def should_rate_limit(body: RlsJsonRequest, request: Request,
                            caller: User = require("service", "admin")) -> Response:
    """The same call and answers as the gRPC service; counters in the workers, rules from `limits load`."""
    gateway = request.app.state.gateway
    status, content = await json_call(gateway.rls, await request.body(), Bounds.from_settings(gateway.settings))
    return Response(content, status, media_type="application/json")
