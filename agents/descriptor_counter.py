"""The worker's ``rls`` role: descriptor hits of rate limit service calls in, one answer per hit out.

The gateway publishes each limited descriptor of a ``ShouldRateLimit`` call to ``rls-hits``, keyed
by its counter key, so every counter lives on exactly one partition and one worker: a per-IP or
per-route limit is exact however many workers share the topic. This service counts each hit with
the pure :func:`agents.descriptor_counting.count_hit`, writes the answer to ``rls-decisions`` (the
audit trail: every answer, with the limit it was checked against) and, for a stamped hit, to the
caller's reply partition with the ``ratewarden-reply-kind: rls`` header (``schemas.replies``).
Counters are window counters in RocksDB behind the ``rls`` changelog, flushed like the limiter's
(:class:`agents.partition_counting.PartitionCounting`). A hit that cannot be read or counted goes
to the dead-letter topic with its reason; the worker keeps running.
"""

import logging
import time
from typing import Callable, get_args

import msgspec

from agents.descriptor_counting import count_hit
from agents.intake import Rejection
from agents.partition_counting import PartitionCounting
from schemas.descriptors import DescriptorAlgorithm, DescriptorHit
from schemas.replies import RLS_REPLY
from streams import metrics
from streams.settings import Settings

__all__ = ["DescriptorCounter"]

logger = logging.getLogger(__name__)

ALGORITHMS = get_args(DescriptorAlgorithm)
#: The answer counter per code, looked up once (``labels()`` costs 4 us, twice per batch and partition).
_ANSWERED = {code: metrics.RLS_ANSWERS.labels(code) for code in ("OK", "OVER_LIMIT")}


def _checked(hit: DescriptorHit) -> DescriptorHit:
    """``hit`` if it can be counted, else ValueError naming what is wrong."""
    if not hit.window > 0:
        raise ValueError(f"window must be positive, got {hit.window!r}")
    if hit.limit < 0 or hit.hits < 0:
        raise ValueError(f"limit and hits must be >= 0, got {hit.limit!r} and {hit.hits!r}")
    if not hit.counter:
        raise ValueError("empty counter key")
    if hit.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {hit.algorithm!r}")
    return hit


class DescriptorCounter(PartitionCounting):
    """Counts every descriptor hit of the ``rls-hits`` partitions this process is assigned."""

    assigned_gauge = metrics.RLS_ASSIGNED
    counters_gauge = metrics.RLS_COUNTERS

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings, topic=settings.rls_hits_topic, group=settings.rls_group,
                         changelog_topic=settings.rls_changelog_topic, state_dir=settings.state_dir / "rls",
                         role="rls")
        self.clock = clock
        self._decode = msgspec.json.Decoder(DescriptorHit).decode
        self._encode = msgspec.json.Encoder().encode

    async def process(self, partition: int, records) -> None:
        store = self.stores[partition]
        get, set_, decode, encode, now = store.get, store.set, self._decode, self._encode, self.clock()
        sender = self.outputs.sender(partition)
        topic, reply_to = self.settings.rls_decisions_topic, self.replies.partition
        routed: dict[int, list[bytes]] = {}  # answers for waiting gateways, per reply partition
        ok = over = 0
        watermark = store.watermark
        for record in records:
            try:
                hit = _checked(decode(record.value))
                answer, counter = count_hit(get(hit.counter), hit, now)
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError, ArithmeticError) as exc:
                await self.dead_letter(partition, record, Rejection("invalid_hit", str(exc)[:500]), now)
                continue
            set_(hit.counter, counter)
            if hit.ts > watermark:
                watermark = hit.ts
            if answer.code == "OK":
                ok += 1
            else:
                over += 1
            key, value = record.key or hit.counter.encode(), encode(answer)
            await sender.add(topic, partition, key, value)
            if record.headers and (reply := reply_to(record.headers)) is not None:  # a waiting gateway
                routed.setdefault(reply, []).append(value)
        if routed:
            await self.replies.write(sender, routed, RLS_REPLY)
        store.watermark = watermark
        self.counted(partition, records)
        metrics.RLS_HITS_IN.inc(len(records))
        if over:
            _ANSWERED["OVER_LIMIT"].inc(over)
        if ok:
            _ANSWERED["OK"].inc(ok)
