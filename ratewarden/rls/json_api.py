"""The reference's ``POST /json``: a protojson ``RateLimitRequest`` in, a protojson ``RateLimitResponse`` out.

For clients that cannot speak gRPC (a Lua filter, curl). As the reference's handler: the body is
parsed with protojson rules (lowerCamel or proto field names, unknown fields refused), the answer is
200, or 429 when the overall code is ``OVER_LIMIT`` (500 when it is ``UNKNOWN``). Where the
reference answers a bare 400 / 500 status text, this one answers ``{"error": message}`` so the caller
learns what was wrong; the bounds and messages are the gRPC front's (``ratewarden.rls.validation``).

The HTTP route (body size limit, authentication) belongs to the gateway app; this is the part that
does not depend on the web framework.
"""

import json
import logging

from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import json_format

from ratewarden.rls.metrics import INVALID_REASONS
from ratewarden.rls.responses import response_json
from ratewarden.rls.service import EngineFailure, decide
from ratewarden.rls.validation import DEFAULT_BOUNDS, Bounds, InvalidCall

__all__ = ["json_call"]

logger = logging.getLogger(__name__)

_OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
_UNKNOWN = rls_pb2.RateLimitResponse.UNKNOWN


def _error(status: int, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": message}).encode()


def _parse(body: bytes) -> rls_pb2.RateLimitRequest:
    """``body`` as a request; ValueError with a short message when it is not one."""
    try:
        text = body.decode("utf-8")
        return json_format.Parse(text, rls_pb2.RateLimitRequest())
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    except json_format.ParseError as exc:
        raise ValueError(f"not a RateLimitRequest: {str(exc)[:200]}") from None
    except RecursionError:  # nesting deep enough to exhaust the parser
        raise ValueError("not a RateLimitRequest: nested too deep") from None


async def json_call(engine, body: bytes, bounds: Bounds = DEFAULT_BOUNDS) -> tuple[int, bytes]:
    """The HTTP status and JSON body answering ``body``, a protojson ``RateLimitRequest``."""
    try:
        request = _parse(body)
    except ValueError as exc:
        INVALID_REASONS["json"].inc()
        logger.debug("POST /json: %s", exc)
        return _error(400, str(exc))
    try:
        response = await decide(engine, request, bounds)
    except InvalidCall as exc:
        return _error(400, exc.message)
    except EngineFailure as exc:
        return _error(500, str(exc))
    code = response.overall_code
    status = 429 if code == _OVER_LIMIT else 500 if code == _UNKNOWN else 200
    return status, response_json(response)
