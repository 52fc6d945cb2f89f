"""Prometheus metrics of the rate limit service front (gRPC ``ShouldRateLimit`` and ``POST /json``).

The label sets are small and fixed, so the children used on every call are bound once here
(``CALL_CODES``, ``INVALID_REASONS``, ``AUTH_OUTCOMES``): a call pays a counter increment, not a
label lookup under the metric's lock.
"""

from prometheus_client import Counter, Histogram

__all__ = [
    "AUTH_FAILURES", "AUTH_OUTCOMES", "CALLS", "CALL_CODES", "ENGINE_ERRORS", "INVALID_CALLS", "INVALID_REASONS",
    "LATENCY", "UNDECIDED", "UNKNOWN_DOMAIN", "call_counter",
]

#: Seconds, from half a millisecond: Envoy waits on every call, so the low end is where the detail matters.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CALLS = Counter(
    "ratewarden_rls_calls_total",
    "ShouldRateLimit calls answered, by overall code (OK, OVER_LIMIT, UNKNOWN)",
    ["code"],
)
INVALID_CALLS = Counter(
    "ratewarden_rls_invalid_calls_total",
    "ShouldRateLimit calls refused as INVALID_ARGUMENT (HTTP 400 on /json), by reason",
    ["reason"],
)
ENGINE_ERRORS = Counter(
    "ratewarden_rls_engine_errors_total",
    "ShouldRateLimit calls the engine failed on (gRPC INTERNAL, HTTP 500 on /json)",
)
AUTH_FAILURES = Counter(
    "ratewarden_rls_auth_failures_total",
    "gRPC calls refused by authentication: missing or invalid key, role not allowed, address refused",
    ["reason"],
)
LATENCY = Histogram(
    "ratewarden_rls_call_seconds",
    "From a validated ShouldRateLimit call to its response (engine included)",
    buckets=_LATENCY_BUCKETS,
)

UNDECIDED = Counter("ratewarden_rls_undecided_total", "Descriptors answered by the failure mode (no answer in time)")
UNKNOWN_DOMAIN = Counter("ratewarden_rls_unknown_domain_total", "Calls for a domain without rules (answered OK)")

#: The reasons ``ratewarden.rls.validation.InvalidCall`` carries.
INVALID_REASONS = {
    reason: INVALID_CALLS.labels(reason)
    for reason in ("domain", "descriptors", "too_many_descriptors", "entries", "key", "entry_bytes", "hits_addend",
                   "json")
}
#: The reasons the authentication interceptor refuses a call for.
AUTH_OUTCOMES = {reason: AUTH_FAILURES.labels(reason) for reason in ("missing", "invalid", "role", "refused")}
CALL_CODES = {code: CALLS.labels(code) for code in ("OK", "OVER_LIMIT", "UNKNOWN")}


def call_counter(code: str):
    """The bound counter of overall code ``code`` (an unexpected code is counted as UNKNOWN)."""
    return CALL_CODES.get(code) or CALL_CODES["UNKNOWN"]
