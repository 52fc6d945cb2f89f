"""``RlsResult`` -> protobuf ``RateLimitResponse`` (gRPC) and its protojson form (``POST /json``).

Field for field as the reference answers: ``overall_code``; one ``DescriptorStatus`` per descriptor
in request order with ``code``, ``current_limit`` only when a limit applied, ``limit_remaining`` and
``duration_until_reset`` when the status has one. A status the engine could not decide in time
(``decided=False``) is answered with the code it carries (the configured failure mode's).

``response_headers_to_add`` carries the IETF RateLimit fields (draft-11, the format
``ratewarden.gateway.headers`` writes) of the governing status, chosen as the reference chooses the
descriptor for its headers: the last ``OVER_LIMIT`` one, else the limited one with the least
remaining (the first of equals); no headers when no status has a limit. The ``RateLimit-Policy``
value depends only on (name, limit, unit), so it is cached; enum numbers are looked up once here.
"""

import json
from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from ratewarden.gateway.headers import limit_item, policy_item
from ratewarden.rls.results import RlsResult, Status
from schemas.descriptors import UNIT_SECONDS

__all__ = ["CODES", "UNITS", "build_response", "governing", "rate_headers", "response_json"]

_Response = rls_pb2.RateLimitResponse
_DescriptorStatus = _Response.DescriptorStatus
_RateLimit = _Response.RateLimit
_HeaderValue = base_pb2.HeaderValue

#: "OK" / "OVER_LIMIT" -> the enum number (anything else: UNKNOWN, 0)
CODES = {name: _Response.Code.Value(name) for name in ("OK", "OVER_LIMIT")}
#: "second" .. "year" -> the enum number
UNITS = {unit: _RateLimit.Unit.Value(unit.upper()) for unit in UNIT_SECONDS}
_OVER_LIMIT = "OVER_LIMIT"
_POLICY_CACHE_MAX = 4_096
_policy_cache: dict[tuple[str | None, int, str | None], str] = {}


def _sf_string(name: str | None) -> str:
    """``name`` as an RFC 8941 String: printable ASCII, ``"`` and ``\\`` escaped; unnamed limits are "default"."""
    if not name:
        return '"default"'
    text = "".join(c if " " <= c <= "~" else "?" for c in name)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def governing(statuses: Sequence[Status]) -> Status | None:
    """The status the headers describe: the last OVER_LIMIT one, else the limited one with the least remaining."""
    best: Status | None = None
    for status in statuses:
        if status.requests_per_unit is None:
            continue
        if status.code == _OVER_LIMIT:
            best = status
        elif best is None or (best.code != _OVER_LIMIT and status.remaining < best.remaining):
            best = status
    return best


def rate_headers(status: Status) -> tuple[str, str]:
    """``RateLimit-Policy`` and ``RateLimit`` values of a limited ``status``."""
    shape = (status.name, status.requests_per_unit, status.unit)
    policy = _policy_cache.get(shape)
    if policy is None:
        if len(_policy_cache) >= _POLICY_CACHE_MAX:
            _policy_cache.clear()
        window = UNIT_SECONDS.get(status.unit or "", 1)
        policy = _policy_cache[shape] = policy_item(_sf_string(status.name), status.requests_per_unit, window)
    reset = status.reset_after if status.reset_after is not None else UNIT_SECONDS.get(status.unit or "", 1)
    return policy, limit_item(policy[:policy.index(";q=")], status.remaining, reset)


def _status(status: Status) -> _DescriptorStatus:
    code = CODES.get(status.code, 0)
    if status.requests_per_unit is None:
        return _DescriptorStatus(code=code, limit_remaining=status.remaining)
    limit = _RateLimit(requests_per_unit=status.requests_per_unit, unit=UNITS.get(status.unit, 0),
                       name=status.name or "")
    if status.reset_after is None:
        return _DescriptorStatus(code=code, current_limit=limit, limit_remaining=status.remaining)
    return _DescriptorStatus(code=code, current_limit=limit, limit_remaining=status.remaining,
                             duration_until_reset=Duration(seconds=status.reset_after))


def build_response(result: RlsResult) -> _Response:
    """The ``RateLimitResponse`` of ``result``."""
    statuses = result.statuses
    response = _Response(overall_code=CODES.get(result.overall, 0), statuses=[_status(s) for s in statuses])
    top = governing(statuses)
    if top is not None:
        policy, ratelimit = rate_headers(top)
        response.response_headers_to_add.extend((
            _HeaderValue(key="RateLimit-Policy", value=policy), _HeaderValue(key="RateLimit", value=ratelimit),
        ))
    return response


def response_json(response: _Response) -> bytes:
    """``response`` in protojson form, as the reference's ``/json`` writes it (lowerCamel names, enum names)."""
    return json.dumps(json_format.MessageToDict(response), separators=(",", ":")).encode()
