"""Replicated tables fed by compacted control topics (rate limits, the blocklist, users, owners).

Every worker must see every limit and every blocklist entry (not only those of its partitions), so
each worker reads all partitions of the control topic from the beginning, outside any consumer
group, applies each record, and keeps tailing. The limiter waits for the first catch-up, so no
event is decided against a half-loaded table. (Faust's GlobalTable would do the same job; its
recovery has open bugs, see the Faust notes, and this reader is a few dozen lines we test.)
"""

import asyncio
import logging
from typing import Callable

import msgspec
from aiokafka import TopicPartition

from streams.kafka_io import make_consumer
from streams.settings import Settings
from streams.stopping import bounded

__all__ = ["ControlTable", "blocklist_key"]

logger = logging.getLogger(__name__)

Apply = Callable[[bytes, bytes | None], None]


def blocklist_key(kind: str, subject: str) -> str:
    return f"{kind}:{subject}"


class ControlTable:
    """Reads one compacted topic into memory through ``apply(key, value)``, then follows it."""

    def __init__(self, settings: Settings, topic: str, apply: Apply) -> None:
        self.settings, self.topic, self._apply = settings, topic, apply
        self.ready = asyncio.Event()
        self.consumer = None
        self.applied = 0

    async def start(self, partitions: int) -> None:
        """Assign all ``partitions`` of the topic (as ``ensure_topics`` reported them) from the start."""
        self.consumer = make_consumer(self.settings, group_id=None, fetch_max_wait_ms=100)
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self._ends = await self.consumer.end_offsets(tps) if tps else {}

    async def catch_up(self) -> None:
        """Read until the end offsets seen at start; then the table is ready."""
        while await self._behind():
            await self.poll(timeout_ms=500)
        self.ready.set()
        logger.info("table %s ready with %d records applied", self.topic, self.applied)

    async def _behind(self) -> bool:
        for tp, end in self._ends.items():
            if await self.consumer.position(tp) < end:
                return True
        return False

    async def poll(self, timeout_ms: int = 1_000) -> None:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms)
        for records in batches.values():
            for record in records:
                try:
                    self._apply(record.key, record.value)
                    self.applied += 1
                except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
                    logger.warning("skipping bad record at %s@%d: %s", self.topic, record.offset, exc)

    async def run(self) -> None:
        await self.catch_up()
        while True:
            await self.poll()

    async def stop(self) -> None:
        """Stop the consumer, giving up after a bound (aiokafka's stop can hang on a dead SASL_SSL
        connection or a broker that is gone; a worker or gateway being stopped must still exit)."""
        if self.consumer is not None:
            await bounded(f"table {self.topic}", "its consumer", self.consumer.stop())
