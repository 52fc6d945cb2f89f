"""The answer to one decided (or undecided) request: status, JSON body and RateLimit fields.

One function builds it for both ``POST /requests`` (a whole HTTP answer) and each item of
``POST /requests/batch`` (an entry of its ``decisions`` list), so the two can never disagree.
"""

from typing import Any, NamedTuple

from agents.strategies.base import ADDRESS_REASON
from ratewarden.gateway.headers import PolicyCache, rate_fields, seconds, with_address
from ratewarden.gateway.metrics import ANSWERS
from ratewarden.gateway.runtime import Outcome
from streams.settings import Settings

__all__ = ["Answer", "Answers", "add_counts"]

#: The counter child of each verdict, looked up once (``labels`` costs a lock and a dict per call).
_COUNT = {v: ANSWERS.labels(v) for v in ("allow", "throttle", "block", "fail_open", "fail_closed")}


def _count(verdict: str, counted: dict[str, int] | None) -> None:
    if counted is None:
        _COUNT[verdict].inc()
    else:
        counted[verdict] = counted.get(verdict, 0) + 1


def add_counts(counted: dict[str, int]) -> None:
    """Add what :meth:`Answers.__call__` counted in ``counted`` to the answers metric."""
    for verdict, n in counted.items():
        _COUNT[verdict].inc(n)


class Answer(NamedTuple):
    code: int
    body: dict[str, Any]
    policy: str  # RateLimit-Policy
    ratelimit: str | None  # RateLimit: None when no decision came
    retry_after: str | None  # Retry-After
    fail_open: bool

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The answer's own header fields, for an ASGI ``http.response.start``."""
        fields = [(b"ratelimit-policy", self.policy.encode())]
        if self.ratelimit is not None:
            fields.append((b"ratelimit", self.ratelimit.encode()))
        if self.retry_after is not None:
            fields.append((b"retry-after", self.retry_after.encode()))
        if self.fail_open:
            fields.append((b"ratewarden-fail-open", b"true"))
        return fields

    def entry(self) -> dict[str, Any]:
        """The batch entry: the body, ``code`` and the fields as strings (``retry_after_header``: Retry-After)."""
        entry = {**self.body, "code": self.code, "ratelimit_policy": self.policy}
        if self.ratelimit is not None:
            entry["ratelimit"] = self.ratelimit
        if self.retry_after is not None:
            entry["retry_after_header"] = self.retry_after
        return entry


class Answers:
    """Builds answers with one gateway's limits and fail mode; counts them in the ANSWERS metric."""

    def __init__(self, settings: Settings, policies: PolicyCache) -> None:
        self.policies = policies
        self.fail_open = settings.gateway_fail_mode == "open"
        self.timeout_detail = f"no decision within {settings.gateway_decision_timeout:g} s"

    def __call__(self, outcome: Outcome, counted: dict[str, int] | None = None) -> Answer:
        """The answer to ``outcome``, counted in the metric, or in ``counted`` (by verdict) for the caller to add
        to it once (a batch: one metric update per verdict, not per item)."""
        event, d = outcome
        policies = self.policies.get(event.user_id, event.request_type)
        if d is None:
            if self.fail_open:
                _count("fail_open", counted)
                body = {"status": "ok", "request_id": event.request_id, "shadow": False, "fail_open": True}
                return Answer(200, body, policies.value, None, None, True)
            _count("fail_closed", counted)
            body = {"status": "unavailable", "request_id": event.request_id, "detail": self.timeout_detail}
            return Answer(503, body, policies.value, None, "1", False)
        _count(d.verdict, counted)
        if d.reason == ADDRESS_REASON:  # rare: refused by its address's limit
            policies = with_address(policies, d)
        policy, ratelimit = rate_fields(policies, d)
        if d.verdict == "allow":
            body = {"status": "ok", "request_id": d.request_id, "shadow": d.shadow, "fail_open": False}
            return Answer(200, body, policy, ratelimit, None, False)
        if d.verdict == "throttle":
            body = {"status": "throttled", "request_id": d.request_id, "reason": d.reason, "retry_after": d.retry_after}
            return Answer(429, body, policy, ratelimit, str(max(1, seconds(d.retry_after))), False)
        body = {"status": "blocked", "request_id": d.request_id, "reason": d.reason}
        return Answer(403, body, policy, ratelimit, None, False)
