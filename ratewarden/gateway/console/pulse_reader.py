"""The console's "pulse": a reader of the decisions topic from its end, for the live overview.

The gateway does not read the decisions topic on its hot path (decisions come back routed on the
replies topic), so the overview needs a reader of its own. It has no consumer group (nothing is
committed, no rebalance touches the workers), starts at the end of every partition, and decodes
only the verdict, user and decision time of each record with msgspec into
:class:`ratewarden.gateway.console.pulse.PulseCounts`. The last :data:`RECENT` records are kept as
raw bytes (decoded only when a page asks for them). Started on the first console view, stopped with
the gateway; a failure is logged and counted and the reader starts over from the end after
:data:`RETRY` seconds.
"""

import asyncio
import logging
import time
from collections import deque

import msgspec
from aiokafka import TopicPartition

from ratewarden.gateway.console.pulse import PulseCounts
from schemas.decisions import Decision
from streams.kafka_io import make_consumer
from streams.settings import Settings

__all__ = ["PulseReader", "RECENT"]

logger = logging.getLogger(__name__)

#: Raw decisions kept for the subject pages ("recent decisions").
RECENT = 5_000
#: Seconds between a failure of the reader and its restart.
RETRY = 2.0


class _Light(msgspec.Struct):
    """The fields the pulse reads of a decision; msgspec skips the others without building them."""

    verdict: str
    user_id: str = ""
    ts_decided: float = 0.0


class PulseReader:
    """Follows ``settings.decisions_topic`` in the background and counts what it sees."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.counts = PulseCounts()
        self.recent: deque[bytes] = deque(maxlen=RECENT)
        self.started_at: float | None = None
        self.errors = 0
        self.decode_errors = 0
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None
        self._decode = msgspec.json.Decoder(_Light).decode

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def ensure_started(self) -> None:
        """Start following the topic unless already doing so (called by every console view)."""
        if self._task is None:
            self.started_at = time.time()
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def recent_decisions(self) -> list[Decision]:
        """The kept decisions, newest first (records that do not decode are left out)."""
        decode, out = msgspec.json.Decoder(Decision).decode, []
        for raw in reversed(self.recent):
            try:
                out.append(decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        return out

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker away, a topic deleted: count, log, start over
                self.errors += 1
                self.last_error = repr(exc)
                logger.warning("console pulse: reading %s failed (%d so far): %r; retrying in %g s",
                               self.settings.decisions_topic, self.errors, exc, RETRY)
                await asyncio.sleep(RETRY)

    async def _follow(self) -> None:
        topic = self.settings.decisions_topic
        consumer = make_consumer(self.settings, group_id=None, isolation_level="read_committed")
        await consumer.start()
        try:
            first = TopicPartition(topic, 0)
            consumer.assign([first])  # the consumer's metadata covers assigned topics only
            await consumer.beginning_offsets([first])
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            logger.info("console pulse: following %s (%d partitions) from its end", topic, len(tps))
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
                for records in batches.values():
                    self._count(records)
        finally:
            await asyncio.shield(consumer.stop())

    def _count(self, records) -> None:
        add, decode, keep = self.counts.add, self._decode, self.recent.append
        for record in records:
            value = record.value
            if value is None:
                continue
            try:
                light = decode(value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.decode_errors += 1
                if self.decode_errors == 1 or self.decode_errors % 1_000 == 0:
                    logger.warning("console pulse: %d records of %s are not decisions",
                                   self.decode_errors, self.settings.decisions_topic)
                continue
            add(light.verdict, light.user_id, light.ts_decided or record.timestamp / 1000)
            keep(value)
