"""How far the automatic bans are known, by event time: the progress behind ``RATEWARDEN_BAN_TIMING=event_time``.

A ban from the window ending at ``E`` starts at ``E + ban_delay`` (event time). The limiter may then
decide an event at ``t`` as a pure function of its inputs once every ban that could be active at
``t`` has been written — every window ending by ``t - ban_delay`` judged. That knowledge travels with
the data, in order, so no clock decides it:

1. stage 1 marks each ``decisions`` partition's closed windows on ``ip-features`` (``FeaturesWatermark``);
2. stage 2, having published the flags of every window its sources closed, follows them with a
   :class:`schemas.flags.FlagsWatermark` on every ``ip-flags`` partition;
3. the blocklist agent, having written the bans of those flags, writes a :class:`schemas.flags.BanHorizon`
   to ``blocklist`` after them (:class:`FlagsProgress` says when): a reader of ``blocklist`` that has
   a horizon has every ban it covers;
4. the limiter's :class:`agents.ban_gate.BanGate` takes the least horizon over ``ip-flags`` partitions.
"""

import logging

import msgspec

from schemas.flags import HORIZON_KEY_PREFIX, BanHorizon, FlagsWatermark

__all__ = ["FlagsProgress", "horizon_key", "is_horizon_key", "is_mark", "only_flags"]

logger = logging.getLogger(__name__)


def horizon_key(partition: int) -> str:
    """The ``blocklist`` key of the horizon of ``ip-flags`` partition ``partition``."""
    return f"{HORIZON_KEY_PREFIX}{partition}"


def is_horizon_key(key: str) -> bool:
    return key.startswith(HORIZON_KEY_PREFIX)


class _Kind(msgspec.Struct):
    type: str = "flag"


_kind = msgspec.json.Decoder(_Kind).decode


def is_mark(value: bytes) -> bool:
    """An ``ip-flags`` record value that is a progress marker, not a flag."""
    try:
        return _kind(value).type == FlagsWatermark.__struct_config__.tag
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False  # the reader's own decoder says what is wrong with it


def only_flags(values) -> list[bytes]:
    """The flags among ``ip-flags`` record values: progress markers and tombstones left out (for readers of the topic)."""
    return [value for value in values if value is not None and not is_mark(value)]


class FlagsProgress:
    """The blocklist agent's view of stage 2's progress: per ``ip-flags`` partition, per ``ip-features``
    partition (the sources of flags), the windows whose flags are all in.

    A partition's horizon is the least over every source; it is known once each has spoken, and only
    moves forward. :meth:`advance` answers the horizon to publish when it moved.
    """

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.marks: dict[int, dict[int, float]] = {}
        self.published: dict[int, float] = {}

    def advance(self, partition: int, mark: FlagsWatermark) -> BanHorizon | None:
        """Record ``mark`` (read on ``partition``); the new horizon of ``partition`` if it moved, else None."""
        marks = self.marks.setdefault(partition, {})
        if mark.closed_until <= marks.get(mark.source, float("-inf")):
            return None
        marks[mark.source] = mark.closed_until
        if len(marks) < self.sources:
            return None
        horizon = min(marks.values())
        if horizon <= self.published.get(partition, float("-inf")):
            return None
        self.published[partition] = horizon
        return BanHorizon(partition=partition, closed_until=horizon)

    def covers(self, partition: int, window_end: float) -> bool:
        """A horizon published for ``partition`` already claimed the window ending at ``window_end`` complete."""
        return window_end <= self.published.get(partition, float("-inf"))
