"""The window counter that the ``fixed`` and ``sliding`` strategies share (not an algorithm itself).

Windows are aligned to the epoch: window ``i`` covers ``[i*W, (i+1)*W)`` of event time. A counter
holds the allowed count of the current window and of the one before it (the sliding window weighs
that one by its overlap). An event older than the counter's window (out of order within a user) is
judged at the start of the counter's current window: counters never move backwards. Changing a
limit's window starts a fresh counter; switching between fixed and sliding keeps it.
"""

import math
import struct
from typing import NamedTuple

from agents.strategies.base import Rule

__all__ = ["Counter", "WindowStrategy", "roll"]

_COUNTER = struct.Struct("<dqqq")


class Counter(NamedTuple):
    """The state of one window counter: window length, current window index, and allowed counts."""

    window: float
    index: int
    count: int
    previous: int


def roll(counter: Counter | None, window: float, ts: float) -> Counter:
    """The counter moved to the window that holds ``ts`` (late events keep the current window)."""
    index = math.floor(ts / window)
    if counter is None or counter.window != window:
        return Counter(window, index, 0, 0)
    if index <= counter.index:
        return counter
    previous = counter.count if index == counter.index + 1 else 0
    return Counter(window, index, 0, previous)


class WindowStrategy:
    """Everything of the window counter strategies but :meth:`check`: state, codec, expiry."""

    name = "window"
    state_type = Counter
    state_id = 1
    #: Version 0 is the untagged 32-byte value written before strategies existed; 1 is the same
    #: payload behind a tag byte.
    state_version = 1
    key_suffix = ""  # the keys written before strategies existed
    #: A counter is dropped this many windows after its own began (the sliding window still reads it
    #: one window later; the slack covers out-of-order events).
    lag_windows = 3

    def advance(self, state: Counter | None, rule: Rule, ts: float) -> Counter:
        return roll(state, rule.window, ts)

    def record(self, state: Counter, rule: Rule, ts: float) -> Counter:
        return Counter(state.window, state.index, state.count + 1, state.previous)

    def expired(self, state: Counter, watermark: float) -> bool:
        return (state.index + self.lag_windows) * state.window <= watermark

    def encode_state(self, state: Counter) -> bytes:
        return _COUNTER.pack(state.window, state.index, state.count, state.previous)

    def decode_state(self, payload: bytes, version: int) -> Counter:
        if version not in (0, 1):
            raise ValueError(f"window counter version {version} is newer than this code")
        return Counter(*_COUNTER.unpack(payload))

    def __repr__(self) -> str:
        return f"<strategy {self.name}>"
