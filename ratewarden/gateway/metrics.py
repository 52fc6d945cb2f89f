"""Prometheus metrics of a gateway process (served at ``/metrics``)."""

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["ANSWERS", "AUTH_EVICTIONS", "AUTH_FAILURES", "AUTH_REFUSALS", "DECISION_WAIT", "TIMEOUTS", "WAITING"]

ANSWERS = Counter(
    "ratewarden_gateway_requests_total",
    "POST /requests answers by verdict (allow, throttle, block, fail_open, fail_closed)",
    ["verdict"],
)
DECISION_WAIT = Histogram(
    "ratewarden_gateway_decision_wait_seconds",
    "From publishing a request event to reading its decision",
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
TIMEOUTS = Counter("ratewarden_gateway_decision_timeouts_total", "Requests whose decision did not arrive in time")
WAITING = Gauge("ratewarden_gateway_waiting_requests", "Requests waiting for their decision")
AUTH_FAILURES = Counter("ratewarden_gateway_auth_failures_total", "Requests with an unknown or revoked API key")
AUTH_REFUSALS = Counter(
    "ratewarden_gateway_auth_refusals_total",
    "Requests answered 429 because their address sent too many unknown keys in the window",
)
AUTH_EVICTIONS = Counter(
    "ratewarden_gateway_auth_limiter_evictions_total",
    "Addresses the failed-key limiter forgot before their window ended because it was full",
)
