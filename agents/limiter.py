"""The hot path: fetched batches of raw request events in, one decision per event out.

Runs as a task inside the Faust application (see ``ratewarden.worker``) but owns its consumer and
producer, because Faust's per-message delivery caps any agent near 12k events/s (measured; see
docs/architecture.md). Per fetched batch and partition it decodes raw bytes, calls the pure
:func:`agents.policy.decide`, appends decisions to one record batch per partition; every
``flush_interval`` seconds or ``flush_events`` events it flushes (``streams.flushing``): each touched
counter once to the changelog, then delivery, offsets and RocksDB, completing in the background.
"""

import asyncio
import logging
import time
from typing import Callable

import msgspec
from aiokafka import TopicPartition

from agents.intake import EventDecoder, Rejection, dead_letter_value
from agents.limiter_feeds import DecisionFeeds
from agents.policy import decide, decide_fixed
from agents.reply_routes import ReplyRoutes
from agents.rules import Blocklist, LimitBook
from agents.state_codec import STATE_CODEC
from streams import metrics
from streams.batch_consumer import BatchConsumer
from streams.changelog import restore
from streams.flushing import Flusher
from streams.kafka_io import make_consumer
from streams.output import make_outputs
from streams.rocks_state import RocksPartitionStore
from streams.settings import Settings
from streams.state import PartitionStore

__all__ = ["Limiter"]

logger = logging.getLogger(__name__)


class Limiter(DecisionFeeds, BatchConsumer):
    """Decides every request event of the partitions this process is assigned.

    Consumers of the decisions topic in the same process can be :meth:`attach`-ed: each completed
    flush then hands them the decisions it delivered (``streams.folding``, fed mode).
    """

    def __init__(
        self, settings: Settings, limits: LimitBook, blocklist: Blocklist, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(settings)
        self.topic, self.group = settings.requests_topic, settings.limiter_group
        self.limits = limits
        self.blocklist = blocklist
        self.clock = clock
        self.decoder = EventDecoder(settings.max_event_bytes, settings.max_future_skew)
        self.stores: dict[int, PartitionStore] = {}
        self.positions: dict[int, int] = {}  # next input offset per partition, not yet flushed
        self.stats = {"events": 0, "dead_letters": 0, "flushes": 0}
        self._encode = msgspec.json.Encoder().encode
        self._since_flush = 0
        self._last_flush = 0.0
        #: Routed replies (``schemas.replies``); the worker sets the replies topic's real partition count.
        self.replies = ReplyRoutes(settings.replies_topic, settings.replies_partitions)
        self.init_feeds()
        #: Opens the store of a partition (tests substitute an in-memory one).
        self.open_store: Callable[[int], PartitionStore] = (
            lambda partition: RocksPartitionStore(settings.state_dir, partition, STATE_CODEC))
        self.outputs = make_outputs(settings)
        self.flusher = Flusher(self.outputs, settings.changelog_topic, settings.requests_topic)
        self.restorer = None

    async def start(self) -> None:
        """Connect; the subscription waits for :meth:`run` (and the attached consumers)."""
        self.restorer = make_consumer(self.settings, group_id=None, isolation_level="read_committed")
        await self.outputs.start()
        await self.restorer.start()
        await super().start(subscribe=False)
        self._last_flush = time.monotonic()

    async def acquire(self, partitions: list[int]) -> None:
        """Open and restore the stores of newly assigned partitions, and seek to their positions."""
        async with self.lock:
            await self.assigned(partitions)

    async def assigned(self, partitions: list[int]) -> None:
        await self._acquire(partitions)
        await self.feeds_assigned(partitions)

    async def _acquire(self, partitions: list[int]) -> None:
        await self.flusher.settle()
        await asyncio.gather(*(self.outputs.open(p) for p in partitions))
        for partition in partitions:
            store = self.open_store(partition)
            await restore(store, self.restorer, self.settings.changelog_topic, self.outputs.write_marker)
            self.stores[partition] = store
            if store.position is not None:
                self.consumer.seek(TopicPartition(self.settings.requests_topic, partition), store.position)
        metrics.ASSIGNED.set(len(self.stores))
        logger.info("assigned partitions %s", sorted(self.stores))

    async def release(self, partitions: list[int]) -> None:
        """Flush and close the stores of revoked partitions."""
        async with self.lock:
            await self.revoked(partitions)

    async def revoked(self, partitions: list[int]) -> None:
        await self._flush()
        await self.flusher.settle()
        await self.feeds_revoked(partitions)
        await self._release(partitions)

    async def _release(self, partitions: list[int]) -> None:
        for partition in partitions:
            store = self.stores.pop(partition, None)
            if store is not None:
                store.close()
            await self.outputs.close(partition)
        metrics.ASSIGNED.set(len(self.stores))

    async def run(self) -> None:
        """Subscribe once every attached consumer is ready, then consume, decide and flush until :meth:`stop`."""
        if not await self.feeds_ready():
            return
        self.subscribe()
        await super().run()

    async def handle(self, batches) -> None:
        """Decide one getmany result, and flush when it is time (holding the lock)."""
        interval, every = self.settings.flush_interval, self.settings.flush_events
        for tp, records in batches.items():
            if not records:
                continue
            if tp.partition in self.stores:
                records = self._unseen(tp.partition, records)
                if records:
                    await self.process(tp.partition, records)
            elif tp in self.consumer.assignment():
                # Fetched while its state is still being restored: fetch these again later.
                self.consumer.seek(tp, records[0].offset)
        await self.outputs.send_all()
        if self._since_flush >= every or (time.monotonic() - self._last_flush >= interval and self.positions):
            await self._flush()

    def _unseen(self, partition: int, records):
        """Drop records this worker already counted (a consumer rewind must never count twice)."""
        expected = self.positions.get(partition)
        if expected is None:
            expected = self.flusher.handed_off.get(partition, self.stores[partition].position)
        if expected is None or records[0].offset >= expected:
            return records
        fresh = [r for r in records if r.offset >= expected]
        logger.warning(
            "partition %d: skipped %d records below offset %d already counted",
            partition, len(records) - len(fresh), expected,
        )
        return fresh

    async def process(self, partition: int, records) -> None:
        """Decide one fetched batch of one partition (the hot loop: locals only, one rule fast path)."""
        store = self.stores[partition]
        get, set_ = store.get, store.set
        decode, encode, now = self.decoder.decode, self._encode, self.clock()
        rules_for, blocked_reason = self.limits.rules_for, self.blocklist.reason
        topic, replies_topic, reply_to = self.settings.decisions_topic, self.replies.topic, self.replies.partition
        sender = self.outputs.sender(partition)
        batch = sender.batch(topic, partition)
        allowed = throttled = blocked = 0
        watermark = store.watermark
        keep = None if self.decided is None else self.decided.setdefault(partition, []).append  # attach()
        for record in records:
            event = decode(record.value, now)
            if type(event) is Rejection:
                await self.dead_letter(partition, record, event, now)
                continue
            try:
                rules = rules_for(event.user_id, event.request_type)
                block = blocked_reason(event.user_id, event.ip, event.ts)
                if len(rules) == 1 and rules[0].algorithm == "fixed":  # the common case
                    rule = rules[0]
                    before = get(rule.key)
                    decision, after = decide_fixed(event, rule, before, now, block)
                    if after is not before:
                        set_(rule.key, after)
                else:
                    decision = self._decide_general(event, rules, block, get, set_, now)
            except (ArithmeticError, ValueError) as exc:  # a limit or event the policy cannot take
                logger.exception("partition %d: no decision for %s", partition, event.request_id)
                await self.dead_letter(partition, record, Rejection("decision_error", repr(exc)), now)
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
                await sender.add(replies_topic, reply, key_bytes, value)
        store.watermark = watermark
        self.positions[partition] = records[-1].offset + 1
        self._since_flush += len(records)
        self.stats["events"] += len(records)
        metrics.EVENTS_IN.inc(len(records))
        metrics.DECISIONS.labels("allow").inc(allowed)
        metrics.DECISIONS.labels("throttle").inc(throttled)
        metrics.DECISIONS.labels("block").inc(blocked)

    @staticmethod
    def _decide_general(event, rules, block, get, set_, now: float):
        """The decision for one valid event under any rules; stores the counters it changed."""
        before = [get(rule.key) for rule in rules]
        decision, after = decide(event, rules, before, block, now)
        for rule, old, new in zip(rules, before, after):
            if new is not old:
                set_(rule.key, new)
        return decision

    async def dead_letter(self, partition: int, record, rejection: Rejection, now: float) -> None:
        value = dead_letter_value(record.value, rejection, record.topic, record.partition, record.offset, now)
        await self.outputs.sender(partition).add(self.settings.dead_letter_topic, partition, record.key, value)
        self.stats["dead_letters"] += 1
        metrics.DEAD_LETTERS.labels(rejection.reason).inc()
        logger.info("dead letter at %s[%d]@%d: %s", record.topic, record.partition, record.offset, rejection.reason)

    async def flush(self) -> None:
        """Flush and wait until it is complete (delivered, committed, on disk)."""
        async with self.lock:
            await self._flush()
            await self.flusher.settle()
            self.stats["flushes"] = self.flusher.completed

    async def _flush(self) -> None:
        """Hand the counted positions to the flush cycle (``streams.flushing``); it completes in the background."""
        if not self.positions or self.consumer is None:
            return
        positions, self.positions = {p: o for p, o in self.positions.items() if p in self.stores}, {}
        await self.flusher.start(positions, self.stores, self.consumer, self.feeding())  # settles the previous first
        self._since_flush, self._last_flush = 0, time.monotonic()
        self.stats["flushes"] = self.flusher.completed
        metrics.COUNTERS.set(sum(map(len, self.stores.values())))

    async def close(self) -> None:
        """Final flush, then close stores and clients (also on cancellation)."""
        try:
            await self.flush()
        finally:
            for store in self.stores.values():
                store.close()
            self.stores.clear()
            if self.restorer is not None:
                await self.restorer.stop()
            await super().close()
            await self.outputs.stop()
