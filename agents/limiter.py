"""The hot path: fetched batches of raw request events in, one decision per event out.

Runs as a task inside the Faust application (see ``ratewarden.worker``) but owns its consumer and
producer, because Faust's per-message delivery caps any agent near 12k events/s (measured; see
docs/architecture.md). Per fetched batch and partition it decodes raw bytes, calls the pure
:func:`agents.policy.decide`, appends decisions to one record batch per partition; every
``flush_interval`` seconds or ``flush_events`` events it flushes (``streams.flushing``): each touched
counter once to the changelog, then delivery, offsets and RocksDB, completing in the background.

Late events: a partition's counters expire by its event time (its largest ``ts`` so far, the
watermark), ``LATE_WINDOWS`` windows after their own began. An event so much older than the
watermark that its window's counter is certainly gone (old traffic replayed into a partition that
live traffic has moved on, or a producer hours behind) is still decided, against no counter, as if
it were the first of its window: that is counted (``ratewarden_limiter_late_events_total``) and
logged per batch, never silent.
"""

import logging
import time
from typing import Callable

import msgspec
from aiokafka import TopicPartition

from agents.ban_gate import BanGate
from agents.blocklist_entries import Blocklist
from agents.intake import EventDecoder, Rejection
from agents.limiter_feeds import DecisionFeeds
from agents.partition_counting import PartitionCounting
from agents.policy import decide_and_store, decide_fixed, decide_refused
from agents.rules import LimitBook
from agents.strategies.window import WindowStrategy
from schemas.refusals import address_refusal
from streams import metrics
from streams.settings import Settings

__all__ = ["LATE_WINDOWS", "Limiter"]

logger = logging.getLogger(__name__)

#: An event whose ts is this many windows (of its first rule) before the last expiry's watermark has lost
#: its window counter (a counter is dropped ``lag_windows`` windows after its window began).
LATE_WINDOWS = WindowStrategy.lag_windows
#: The decision counter per verdict, looked up once: ``labels()`` costs 4 us, three times per batch and partition.
_DECIDED = {verdict: metrics.DECISIONS.labels(verdict) for verdict in ("allow", "throttle", "block")}


class Limiter(DecisionFeeds, PartitionCounting):
    """Decides every request event of the partitions this process is assigned.

    Consumers of the decisions topic in the same process can be :meth:`attach`-ed: each completed
    flush then hands them the decisions it delivered (``streams.folding``, fed mode).
    """

    def __init__(
        self, settings: Settings, limits: LimitBook, blocklist: Blocklist, clock: Callable[[], float] = time.time,
        gate: BanGate | None = None,
    ) -> None:
        super().__init__(settings, topic=settings.requests_topic, group=settings.limiter_group,
                         changelog_topic=settings.changelog_topic, state_dir=settings.state_dir, role="limiter")
        self.limits = limits
        self.blocklist = blocklist
        self.clock = clock
        #: When bans apply (``RATEWARDEN_BAN_TIMING``): on arrival, or by event time with a bounded wait.
        self.gate = gate or BanGate.from_settings(settings)
        self.held: dict[int, tuple[float, float]] = {}  # partition paused for bans -> (event time, since when)
        self._flush_soon = False
        self.decoder = EventDecoder(settings.max_event_bytes, settings.max_future_skew)
        self._encode = msgspec.json.Encoder().encode
        self.init_feeds()

    async def assigned(self, partitions: list[int]) -> None:
        await super().assigned(partitions)
        await self.feeds_assigned(partitions)

    async def revoked(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.held.pop(partition, None)  # a new assignment starts unpaused
        await self._flush()
        await self.flusher.settle()
        await self.feeds_revoked(partitions)
        await self._release(partitions)

    async def run(self) -> None:
        """Subscribe once every attached consumer is ready, then consume, decide and flush until :meth:`stop`."""
        if not await self.feeds_ready():
            return
        await super().run()

    async def handle(self, batches) -> None:
        """Release the partitions held for bans first; after a batch that held one, flush at once (the analytics
        see decisions only once a flush completes)."""
        if self.held:
            self._release_held()
        await super().handle(batches)
        if self._flush_soon:
            self._flush_soon = False
            await self._flush()

    async def process(self, partition: int, records) -> None:
        """Decide one fetched batch of one partition. With ``ban_timing=event_time``, an event past the ban
        horizon (:mod:`agents.ban_gate`) stops it: the partition is paused at that event until the horizon moves
        (or ``ban_wait`` passes), while the others go on — the analytics need every partition's decisions."""
        gate = self.gate
        stop, ts = await self._decide(partition, records, gate.until(partition))
        if stop < len(records):
            tp = TopicPartition(self.topic, partition)
            self.consumer.seek(tp, records[stop].offset)
            self.consumer.pause(tp)
            self.held[partition] = (ts, time.monotonic())
            self._flush_soon = True
            gate.stats["waits"] += 1
        elif gate.degraded:
            gate.ungated(self.stores[partition].watermark, len(records))
            metrics.BAN_GATE_UNGATED.inc(len(records))

    def _release_held(self) -> None:
        """Resume the held partitions the horizon has passed, or that waited ``ban_wait`` seconds."""
        gate, now = self.gate, time.monotonic()
        for partition, (ts, since) in list(self.held.items()):
            if ts < gate.until(partition, ts):
                pass
            elif now - since >= gate.wait_bound:
                gate.give_up(partition, ts)
                metrics.BAN_GATE_TIMEOUTS.inc()
            else:
                continue
            del self.held[partition]
            self.consumer.resume(TopicPartition(self.topic, partition))
            metrics.BAN_GATE_WAIT.observe(now - since)

    async def _decide(self, partition: int, records, until: float) -> tuple[int, float]:
        """Decide ``records`` up to the first event at or past event time ``until``: the hot loop (locals only, one
        rule fast path). Returns where it stopped (``len(records)`` when done) and that event's time."""
        store = self.stores[partition]
        get, set_ = store.get, store.set
        decode, encode, now = self.decoder.decode, self._encode, self.clock()
        rules_for, blocked_reason = self.limits.rules_for, self.blocklist.reason
        topic, reply_to = self.settings.decisions_topic, self.replies.partition
        routed: dict[int, list[bytes]] = {}  # answers for waiting clients, per reply partition
        sender = self.outputs.sender(partition)
        batch = sender.batch(topic, partition)
        allowed = throttled = blocked = late = 0
        watermark, expired_at = store.watermark, store.expired_at
        keep = None if self.decided is None else self.decided.setdefault(partition, []).append  # attach()
        stop, stopped_at = len(records), 0.0
        for index, record in enumerate(records):
            event = decode(record.value, now)
            if type(event) is Rejection:
                await self.dead_letter(partition, record, event, now)
                batch = sender.batch(topic, partition)  # the open batch may have gone meanwhile (BatchSender)
                continue
            if event.ts >= until:  # rare: only with ban_timing=event_time
                until = self.gate.until(partition, event.ts)
                if event.ts >= until:
                    stop, stopped_at = index, event.ts
                    break
            try:
                rules = rules_for(event.user_id, event.request_type)
                block = blocked_reason(event.user_id, event.ip, event.ts)
                if event.ts < expired_at and event.ts + LATE_WINDOWS * rules[0].window <= expired_at:  # rare
                    late += 1
                if record.headers and (refusal := address_refusal(record.headers)) is not None:  # gateway's
                    decision = decide_refused(event, refusal, block, now)
                elif len(rules) == 1 and rules[0].algorithm == "fixed":  # the common case
                    rule = rules[0]
                    before = get(rule.key)
                    decision, after = decide_fixed(event, rule, before, now, block)
                    if after is not before:
                        set_(rule.key, after)
                else:
                    decision = decide_and_store(event, rules, block, get, set_, now)
            except (ArithmeticError, ValueError) as exc:  # a limit or event the policy cannot take
                logger.exception("partition %d: no decision for %s", partition, event.request_id)
                await self.dead_letter(partition, record, Rejection("decision_error", repr(exc)), now)
                batch = sender.batch(topic, partition)
                continue
            if event.ts > watermark:
                watermark = event.ts
            verdict = decision.verdict
            if verdict == "allow":
                allowed += 1
            elif verdict == "throttle":
                throttled += 1
            else:
                blocked += 1
            if keep is not None:
                keep(decision)
            key_bytes, value = event.user_id.encode(), encode(decision)
            if batch.append(key=key_bytes, value=value, timestamp=None) is None:
                await sender.add(topic, partition, key_bytes, value)
                batch = sender.batch(topic, partition)
            if record.headers and (reply := reply_to(record.headers)) is not None:  # a waiting client
                routed.setdefault(reply, []).append(value)
        if routed:
            await self.replies.write(sender, routed)
        store.watermark = watermark
        if late:
            metrics.LATE_EVENTS.inc(late)
            logger.warning("partition %d: %d late events, %d windows or more before the counters' expiry at event "
                           "time %.0f: decided as the first of their windows", partition, late, LATE_WINDOWS, expired_at)
        if stop:
            self.counted(partition, records if stop == len(records) else records[:stop])
        metrics.EVENTS_IN.inc(stop)
        for verdict, count in (("allow", allowed), ("throttle", throttled), ("block", blocked)):
            if count:
                _DECIDED[verdict].inc(count)
        return stop, stopped_at
