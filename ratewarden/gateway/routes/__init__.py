"""The API's routes, one module per resource, and the error answers they share in the OpenAPI document."""

from ratewarden.gateway.models import Problem

AUTH_ERRORS = {
    401: {"model": Problem, "description": "missing, unknown or revoked API key"},
    403: {"model": Problem, "description": "the key's role may not do this"},
}
BODY_ERRORS = {
    400: {"model": Problem, "description": "the body could not be parsed (e.g. not UTF-8)"},
    413: {"model": Problem, "description": "the body is larger than the configured limit"},
}
NOT_FOUND = {404: {"model": Problem, "description": "no such resource"}}
UNAVAILABLE = {503: {"model": Problem, "description": "Kafka did not take the write in time"}}
