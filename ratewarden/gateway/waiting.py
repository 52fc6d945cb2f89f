"""What one caller (a single request, or a batch) waits for: its decisions, filled in as replies arrive.

One object and one future per caller, not per request: for a batch of 500 a future per request
with ``asyncio.wait`` over them cost more gateway CPU than decoding the replies.
"""

import asyncio

from schemas.decisions import Decision

__all__ = ["Waiting"]

#: A request Kafka refused: no decision will come.
_REFUSED = object()


class Waiting:
    __slots__ = ("_slots", "_remaining", "done")

    def __init__(self, size: int) -> None:
        self._slots: list = [None] * size
        self._remaining = size
        self.done = asyncio.get_running_loop().create_future()
        if not size:
            self.done.set_result(None)

    def land(self, index: int, decision: Decision) -> None:
        """The decision of request ``index`` (a second one for the same request is ignored)."""
        if self._slots[index] is None:
            self._slots[index] = decision
            self._one_less()

    def give_up(self, index: int) -> None:
        """Request ``index`` will get no decision (Kafka refused it)."""
        if self._slots[index] is None:
            self._slots[index] = _REFUSED
            self._one_less()

    def expire(self) -> None:
        """Stop waiting: what has not landed stays undecided."""
        if not self.done.done():
            self.done.set_result(None)

    def _one_less(self) -> None:
        self._remaining -= 1
        if not self._remaining and not self.done.done():
            self.done.set_result(None)

    @property
    def decisions(self) -> list[Decision | None]:
        """In request order; None for a request without a decision (yet, or ever)."""
        return [None if d is _REFUSED else d for d in self._slots]
