"""The API's routes, one module per resource, and the error answers they share in the OpenAPI document."""

from fastapi.exceptions import RequestValidationError

from agents.network_bans import normalize_cidr
from ratewarden.gateway.models import Problem

AUTH_ERRORS = {
    401: {"model": Problem, "description": "missing, unknown or revoked API key"},
    403: {"model": Problem, "description": "the key's role may not do this"},
    429: {"model": Problem, "description": "too many failed authentications from this address: refused until the window passes",
          "headers": {"Retry-After": {"description": "seconds until this address is served again",
                                      "schema": {"type": "string"}}}},
}
BODY_ERRORS = {
    400: {"model": Problem, "description": "the body could not be parsed (e.g. not UTF-8)"},
    413: {"model": Problem, "description": "the body is larger than the configured limit"},
}
NOT_FOUND = {404: {"model": Problem, "description": "no such resource"}}
UNAVAILABLE = {503: {"model": Problem, "description": "Kafka did not take the write in time"}}


def read_unavailable(description: str = "Kafka did not answer in time") -> dict:
    """The 503 of a route that reads a topic within a time bound (with ``Retry-After``)."""
    return {503: {"model": Problem, "description": description,
                  "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}}}


def path_cidr(address: str, prefix: int | None = None) -> str:
    """The normalised CIDR of a path's address or ``address/prefix``, or a 422 shaped like every other
    validation error (a bad address, or a prefix length too long for its family)."""
    try:
        if prefix is None and "/" in address:
            raise ValueError(f"{address!r} is not an address: give a network as /allowlist/ADDRESS/PREFIX")
        return normalize_cidr(address if prefix is None else f"{address}/{prefix}")
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("path", "address"), "msg": str(exc), "type": "value_error"}]) from None
