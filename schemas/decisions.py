"""The decision published for every request on the ``decisions`` topic."""

from typing import Literal

import msgspec

Verdict = Literal["allow", "throttle", "block"]
ALLOW: Verdict = "allow"
THROTTLE: Verdict = "throttle"
BLOCK: Verdict = "block"


#: ``gc=False``: only strings, numbers and booleans inside, so never part of a reference cycle; untracked,
#: the many held at once (batches, in-process feeds) cost the garbage collector nothing.
#: ``omit_defaults=True``: ``status`` is the only field with a default, so a decision without one encodes
#: exactly as before the field existed.
class Decision(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """What the limiter decided for one request, and the numbers behind it.

    ``shadow`` is true when the governing limit runs in shadow mode: the verdict is then ``allow``
    and ``reason`` says what enforcement would have done (e.g. ``shadow:throttle``).
    ``status`` is the event's ``status`` (the outcome the service gave the request), copied as is;
    left out of the JSON when the event had none.
    """

    request_id: str
    user_id: str
    ip: str
    request_type: str
    verdict: Verdict
    reason: str
    limit: int
    count: int
    remaining: int
    window_start: float
    reset_at: float
    retry_after: float
    shadow: bool
    ts_event: float
    ts_decided: float
    status: int | None = None
