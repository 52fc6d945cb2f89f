"""What the rate limit service answers, before it becomes protobuf (gRPC) or JSON (``POST /json``).

Plain tuples so the engine (``ratewarden.rls.engine``) and the protocol fronts stay apart and a unit
test can build answers by hand. The semantics are the reference's (envoyproxy/ratelimit):

* a descriptor no rule matches, or whose limit another matched limit ``replaces``: ``OK``, no limit,
  ``remaining`` 0;
* an ``unlimited`` descriptor: ``OK``, no limit, ``remaining`` 4,294,967,295;
* a limited descriptor: ``OK`` with ``remaining = limit - count`` while ``count <= limit``, else
  ``OVER_LIMIT`` with ``remaining`` 0 (``OK`` again, still 0, in shadow mode);
* ``overall`` is ``OVER_LIMIT`` when any status is.
"""

from typing import NamedTuple

__all__ = ["MAX_REMAINING", "RlsResult", "Status"]

MAX_REMAINING = 4_294_967_295


class Status(NamedTuple):
    code: str  # "OK" or "OVER_LIMIT"
    requests_per_unit: int | None = None  # None: no limit applied (no match, replaced, unlimited)
    unit: str | None = None  # "second" .. "year" (schemas.descriptors.UNIT_SECONDS)
    name: str | None = None
    remaining: int = 0
    reset_after: int | None = None  # whole seconds until the window turns (None without a limit)
    decided: bool = True  # False: no answer in time; ``code`` is the configured failure mode's
    count: int | None = None  # hits in the window, this one included (None without an answer)


class RlsResult(NamedTuple):
    overall: str
    statuses: list[Status]
