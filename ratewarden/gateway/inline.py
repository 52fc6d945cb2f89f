"""``POST /requests`` and ``POST /requests/batch`` after authentication: decode, check, decide, answer.

Shared by the hot ASGI routes (:mod:`ratewarden.gateway.hot`) and the FastAPI declarations that
document them, so both serve the same answers. A reply is ``(status, body, header fields)``.
"""

import logging
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException

from ratewarden.gateway.answers import Answers, add_counts
from ratewarden.gateway.bodies import Invalid, Submit, batch_decoder, checked, is_json
from ratewarden.gateway.headers import PolicyCache
from ratewarden.gateway.runtime import Gateway, Request
from schemas.users import User

__all__ = ["Inline", "Reply", "SUBMITTERS"]

logger = logging.getLogger(__name__)

Reply = tuple[int, Any, list[tuple[bytes, bytes]]]
#: The roles that may submit requests; only the last two may name another user_id or ip, or report a status.
SUBMITTERS = ("client", "service", "admin")
ON_BEHALF = ("service", "admin")
FORBIDDEN = "only service and admin keys may set user_id, ip or status"


def _json_bytes(body: bytes, content_type: bytes | None) -> bytes:
    """The body to decode as JSON, as FastAPI would see it: 400 if it is not UTF-8, 422 if it is no JSON."""
    if not body:
        raise Invalid(["body"], "Field required", "missing")
    if not is_json(content_type):
        raise Invalid(["body"], "Input should be a JSON object (Content-Type: application/json)",
                      "model_attributes_type")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "There was an error parsing the body") from None
    return body


class Inline:
    """The two decision endpoints of one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings
        self.gateway = gateway
        self.answers = Answers(settings, PolicyCache(gateway.limits))
        self.max_items = settings.gateway_batch_max_items
        self._batch = batch_decoder(self.max_items)

    def _request(self, caller: User, submit: Submit, address: Callable[[], str]) -> Request:
        """``(user_id, ip, request_type, status)`` of a valid body; 403 if the caller may not speak for others
        (or for the service: only the service knows the status it answered)."""
        if (submit.user_id is not None or submit.ip is not None or submit.status is not None) \
                and caller.role not in ON_BEHALF:
            raise HTTPException(403, FORBIDDEN)
        return submit.user_id or caller.user_id, submit.ip or address(), submit.request_type, submit.status

    async def submit(self, caller: User, body: bytes, content_type: bytes | None,
                     address: Callable[[], str]) -> Reply:
        """``POST /requests``: one decision."""
        request = self._request(caller, checked(_json_bytes(body, content_type)), address)
        answer = self.answers(await self.gateway.decide(*request))
        return answer.code, answer.body, answer.headers()

    async def batch(self, caller: User, body: bytes, content_type: bytes | None,
                    address: Callable[[], str]) -> Reply:
        """``POST /requests/batch``: one entry per item, in order; a bad item gets its own error entry."""
        items = self._batch(_json_bytes(body, content_type))
        entries: list[dict[str, Any] | None] = [None] * len(items)
        valid: list[int] = []
        requests: list[Request] = []
        for i, item in enumerate(items):
            try:
                requests.append(self._request(caller, checked(item), address))
                valid.append(i)
            except Invalid as exc:
                entries[i] = {"status": "invalid", "code": 422, "detail": exc.line()}
            except HTTPException as exc:
                entries[i] = {"status": "forbidden", "code": exc.status_code, "detail": exc.detail}
        if requests:
            outcomes = await self.gateway.decide_many(requests)
            answers, counted = self.answers, {}
            for i, outcome in zip(valid, outcomes, strict=True):
                entries[i] = answers(outcome, counted).entry()
            add_counts(counted)
        return 200, {"decisions": entries}, []
