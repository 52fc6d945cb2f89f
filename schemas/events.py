"""The request event services publish, one per incoming API request, and the dead-letter record."""

from typing import Annotated

import msgspec

#: Bounds that keep one record small; the intake also rejects raw payloads over 8 KiB.
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
RequestType = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
IpText = Annotated[str, msgspec.Meta(min_length=2, max_length=45, description="IPv4 or IPv6 address")]
EpochSeconds = Annotated[float, msgspec.Meta(ge=0, description="event time, seconds since the epoch")]
HttpStatus = Annotated[
    int, msgspec.Meta(ge=100, le=599, description="the HTTP status (or auth result as one) the service answered")
]


#: ``gc=False``: only strings, numbers and booleans inside, so never part of a reference cycle; untracked,
#: the many held at once (batches, in-process feeds) cost the garbage collector nothing.
class RequestEvent(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One API request, keyed by ``user_id`` on the ``requests`` topic.

    ``status`` is optional: the outcome the service gave the request (e.g. 401 for a failed login),
    when the producer knows it. The abuse analytics count failures with it; without it they work
    from the request shapes alone. Left out of the JSON when unset, so older readers see nothing new.
    """

    request_id: Identifier
    user_id: Identifier
    ip: IpText
    request_type: RequestType
    ts: EpochSeconds
    status: HttpStatus | None = None


class DeadLetter(msgspec.Struct, frozen=True):
    """A payload the limiter could not accept: its original bytes (latin-1 text) and why."""

    reason: str
    detail: str
    payload: str
    topic: str
    partition: int
    offset: int
    ts_rejected: float
