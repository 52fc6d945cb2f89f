"""When the blocklist agent may tombstone a ban, and forget an offence, by event time. Pure.

The agent's event time is kept **per ``ip-flags`` partition** (:class:`BanClock`): the latest window
start it has seen there, from the flags themselves and from the ``abuse-reports`` of the analytics
shard covering that partition (one report per window, flagged or not, so time moves on in quiet
windows too). ``ip-features`` and ``ip-flags`` have the same partition count and key (the IP), so a
report's ``partitions`` are the flags partitions whose flags it follows.

A ban ending at ``end`` is tombstoned once its partition's time ``t`` reaches ``end`` (``end <= t``).
That is safe because a shard publishes its windows in order: every flag still to come on that
partition is for a window starting at or after ``t``, and :func:`agents.blocklist.next_ban` treats
such a flag the same whether the expired ban is still in the blocklist or only in the offence memory
(the ``ban-offences`` topic holds the last automatic ban per IP). The memory itself is tombstoned
once ``t - end`` exceeds ``offence_memory``: any later flag ends after ``t``, so it would forget the
offence anyway.

Only the worker that owns a subject's partition (``partition_for(subject)``, the partition its flags
go to) tombstones it, so two workers never race on one key. User bans (manual only) use the same
rule on the user id.
"""

import logging
import math
from typing import Iterable, Mapping

from agents.blocklist import ban_end
from schemas.limits import BlocklistEntry
from streams.kafka_io import partition_for

__all__ = ["BanClock", "expired", "forgotten", "owner"]

logger = logging.getLogger(__name__)


def owner(key: str, partitions: int) -> int:
    """The ``ip-flags`` partition of a blocklist key ``kind:subject``: where the subject's flags go."""
    _, _, subject = key.partition(":")
    return partition_for(subject.encode(), partitions)


class BanClock:
    """Event time per ``ip-flags`` partition: the latest window start seen there (never moves back)."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}

    def advance(self, partition: int, window_start: float) -> bool:
        """Move ``partition``'s time to ``window_start`` if later; True when it moved."""
        if window_start > self.times.get(partition, -math.inf):
            self.times[partition] = window_start
            return True
        return False

    def at(self, partition: int) -> float:
        return self.times.get(partition, -math.inf)


def expired(
    entries: Mapping[str, BlocklistEntry], clock: BanClock, partitions: int, owned: Iterable[int]
) -> list[str]:
    """Keys of the entries owned here whose end has been reached by their partition's event time."""
    owned = set(owned)
    out = []
    for key, entry in entries.items():
        if entry.ttl is None:
            continue
        p = owner(key, partitions)
        if p in owned and ban_end(entry) <= clock.at(p):
            out.append(key)
    return out


def forgotten(
    memory: Mapping[str, BlocklistEntry], clock: BanClock, partitions: int, owned: Iterable[int], offence_memory: float
) -> list[str]:
    """Keys of the remembered bans owned here that ended more than ``offence_memory`` ago."""
    owned = set(owned)
    out = []
    for key, entry in memory.items():
        p = owner(key, partitions)
        if p in owned and clock.at(p) - ban_end(entry) > offence_memory:
            out.append(key)
    return out
