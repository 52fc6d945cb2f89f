"""``gcra``: the generic cell rate algorithm, as redis-cell and Stripe describe it.

One number per key, the theoretical arrival time ``TAT``: when the key's bucket is empty again.
With the emission interval ``T = window / limit`` and the burst tolerance ``tau = T * burst``
(``burst``: extra requests allowed at once, default 0), a request at ``ts`` is allowed iff

    TAT - ts <= tau        (with TAT taken as ts when it lies in the past)

and an allowed request moves ``TAT`` to ``max(TAT, ts) + T``. So a rested key takes ``burst + 1``
requests at once, and then one every ``T`` seconds: ``limit`` per ``window`` in the long run, with
no window edges where twice the limit gets through. Throttled requests do not move ``TAT``.

The decision's fields mean what they mean for the window algorithms:

* ``remaining``: requests allowed at once after this one, ``floor((tau + T - (TAT' - ts)) / T)``;
  ``count``: ``burst + 1 - remaining`` (the bucket's fill, in requests);
* ``reset_at``: when the bucket is empty again (``TAT`` after this decision); ``window_start`` is
  ``reset_at - window``, so the RateLimit headers' ``w`` is the rule's window;
* ``retry_after``: ``TAT - tau - ts`` rounded up to the millisecond at which a request is allowed
  (and one a millisecond earlier is not).

Times are compared with a slack of 10 µs (or a thousandth of ``T``, if smaller): float seconds near
1.7e9 carry about 0.1 µs of rounding per addition to ``TAT``, and a client that retries exactly at a
boundary must not be refused by that rounding.
"""

import math
import struct
from typing import NamedTuple

from agents.strategies.base import Check, Rule, ceil_ms

__all__ = ["STRATEGY", "Gcra", "GcraState"]

#: Seconds of slack in time comparisons (see the module docstring).
TOLERANCE = 1e-5
_STATE = struct.Struct("<dd")


class GcraState(NamedTuple):
    """The theoretical arrival time of one key, and the window of the rule that last moved it."""

    window: float
    tat: float


class Gcra:
    """The generic cell rate algorithm over a :class:`GcraState` per key."""

    name = "gcra"
    state_type = GcraState
    state_id = 3
    state_version = 1
    key_suffix = "\x1egcra"  # its own key: a switch from a window algorithm starts a fresh state
    #: The state is dropped this many windows after its bucket is empty (covers late events).
    lag_windows = 2

    def advance(self, state: GcraState | None, rule: Rule, ts: float) -> GcraState:
        return GcraState(rule.window, ts) if state is None else state

    def check(self, state: GcraState, rule: Rule, ts: float) -> Check:
        window, limit = rule.window, rule.limit
        burst = rule.burst or 0
        if limit < 1:  # nothing is ever allowed: come back in a window
            return Check(False, 0.0, burst + 1, ts, ts + window, ceil_ms(window))
        interval = window / limit
        slack = TOLERANCE if TOLERANCE < interval * 1e-3 else interval * 1e-3
        tau = interval * burst + slack
        tat = state.tat if state.tat > ts else ts
        if tat - ts <= tau:
            room = max(1, math.floor((tau + interval - (tat - ts)) / interval))  # requests that fit now
            tat += interval  # reset_at if this request is counted
            return Check(True, float(burst + 1 - room), burst + 1, tat - window, tat, 0.0)
        wait = ceil_ms(tat - tau - ts)
        # Step to the millisecond the comparison itself allows, and no later (float rounding).
        while tat - (ts + wait) > tau:
            wait = round(wait + 0.001, 3)
        while wait > 0.001 and tat - (ts + round(wait - 0.001, 3)) <= tau:
            wait = round(wait - 0.001, 3)
        return Check(False, float(burst + 1), burst + 1, tat - window, tat, wait)

    def record(self, state: GcraState, rule: Rule, ts: float) -> GcraState:
        tat = state.tat if state.tat > ts else ts
        return GcraState(rule.window, tat + rule.window / rule.limit)

    def expired(self, state: GcraState, watermark: float) -> bool:
        return state.tat + self.lag_windows * state.window <= watermark

    def encode_state(self, state: GcraState) -> bytes:
        return _STATE.pack(state.window, state.tat)

    def decode_state(self, payload: bytes, version: int) -> GcraState:
        if version != 1:
            raise ValueError(f"gcra state version {version} is newer than this code")
        return GcraState(*_STATE.unpack(payload))

    def __repr__(self) -> str:
        return f"<strategy {self.name}>"


STRATEGY = Gcra()
