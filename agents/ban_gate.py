"""The limiter's wait for the analytics: with ``RATEWARDEN_BAN_TIMING=event_time``, no event is decided before
every ban that could apply to it is known, so verdicts are a function of the recorded inputs alone.

Bans start at their window's end plus ``ban_delay`` (event time; :func:`agents.blocklist.next_ban`).
With ``M`` the least :class:`schemas.flags.BanHorizon` over the ``ip-flags`` partitions (every window
ending by ``M`` judged and its bans written), the next window ends at ``M + window`` at the
earliest, so its bans start no sooner than ``M + window + ban_delay``: events before that are safe.
The analytics see a decision only after the limiter delivered it, so the wait must leave them room:
``ban_delay`` exceeds ``analytics_grace`` (checked), and then every round trip moves the horizon by
at least one window. Before any horizon exists (a fresh deployment) a partition may decide up to
one window plus the delay past the start of its own first window: no ban can start before that.

The limiter pauses a partition at its first event past that bound and goes on with the others (the
analytics need every partition's decisions to close a window), resuming it once the horizon moves.
The wait is bounded (``ban_wait`` wall seconds): analytics that are down or far behind must not stop
the limiter. When a wait times out the gate opens until the horizon has passed everything decided
meanwhile; those events are counted (``ratewarden_ban_gate_ungated_events_total``) and logged, and
bans from those windows apply from when they arrive, as with ``ban_timing=arrival``.
"""

import logging
import math

import msgspec

from schemas.flags import BanHorizon

__all__ = ["BanGate"]

logger = logging.getLogger(__name__)

_INF = math.inf


class BanGate:
    """Per limiter process: the horizons read from ``blocklist``, and the bound on what may be decided.

    ``timing="arrival"`` makes every :meth:`until` infinite (no gate; bans apply when they arrive).
    """

    def __init__(self, timing: str, delay: float, window: float, grace: float, partitions: int, wait: float) -> None:
        if timing == "event_time" and delay <= grace:
            raise ValueError(f"RATEWARDEN_BAN_DELAY ({delay:g} s) must exceed RATEWARDEN_ANALYTICS_GRACE ({grace:g} s) "
                             "with RATEWARDEN_BAN_TIMING=event_time: the analytics could never catch up")
        self.on = timing == "event_time"
        self.delay, self.window, self.partitions, self.wait_bound = delay, window, partitions, wait
        self.marks: dict[int, float] = {}  # ip-flags partition -> horizon
        self.first: dict[int, float] = {}  # limiter partition -> start of its first window (before any horizon)
        self.degraded = False
        self.decided_past = -_INF  # while degraded: the latest event time decided without the gate
        self.stats = {"waits": 0, "timeouts": 0, "ungated": 0}
        self._decode = msgspec.json.Decoder(BanHorizon).decode

    @classmethod
    def from_settings(cls, settings) -> "BanGate":
        return cls(settings.ban_timing, settings.ban_delay, settings.analytics_window, settings.analytics_grace,
                   settings.partitions, settings.ban_wait)

    def put(self, value: bytes | None) -> None:
        """A ``horizon:<p>`` record of ``blocklist`` (a tombstone is ignored: horizons only move forward)."""
        if value is None:
            return
        mark = self._decode(value)
        if mark.closed_until > self.marks.get(mark.partition, -_INF):
            self.marks[mark.partition] = mark.closed_until

    @property
    def horizon(self) -> float | None:
        """Every window ending by this has been judged and banned; None until every partition has said so."""
        if len(self.marks) < self.partitions:
            return None
        return min(self.marks.values())

    def until(self, partition: int, ts: float | None = None) -> float:
        """Events of ``partition`` before this event time may be decided now; ``ts`` (an event about to be
        decided) starts the partition's bootstrap window while no horizon exists. ``-inf``: ask again with ``ts``."""
        if not self.on:
            return _INF
        horizon = self.horizon
        if horizon is None:
            horizon = self.first.get(partition)
            if horizon is None:
                if ts is None:
                    return -_INF
                horizon = self.first[partition] = math.floor(ts / self.window) * self.window
        safe = horizon + self.window + self.delay
        if self.degraded:
            if safe <= self.decided_past:
                return _INF
            self.degraded = False
            logger.info("ban horizon caught up (%.3f): the limiter waits for bans again", horizon)
        return safe

    def give_up(self, partition: int, ts: float) -> None:
        """The wait for an event at ``ts`` timed out: decide without the gate until the horizon passes what is decided."""
        self.stats["timeouts"] += 1
        self.degraded = True
        self.decided_past = max(self.decided_past, ts)
        logger.warning(
            "partition %d: no ban horizon past %.3f after %.0f s (horizon %s): deciding without waiting for bans "
            "until the analytics catch up; bans of those windows apply when they arrive", partition, ts,
            self.wait_bound, self.horizon,
        )

    def ungated(self, watermark: float, events: int) -> None:
        """While degraded: ``events`` were decided without the gate, up to event time ``watermark``."""
        self.decided_past = max(self.decided_past, watermark)
        self.stats["ungated"] += events
