"""aiokafka clients for the hot path, and batch production (one record batch per partition).

Producing through ``create_batch``/``send_batch`` skips aiokafka's per-message ``send`` machinery,
which costs more than the limiter itself; see docs/architecture.md.
"""

import asyncio
import logging
from typing import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka.partitioner import murmur2

from streams.kafka_config import aiokafka_options, resolve_bootstrap
from streams.settings import Settings

__all__ = ["BatchSender", "make_consumer", "make_producer", "partition_for"]

logger = logging.getLogger(__name__)


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's murmur2, as kafka-python and aiokafka do it) picks."""
    if isinstance(key, str):
        key = key.encode()
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def make_producer(settings: Settings, **overrides) -> AIOKafkaProducer:
    options = dict(
        bootstrap_servers=resolve_bootstrap(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=0,  # a decision is waited for: no linger (under load, batches fill while a request is in flight)
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=30_000,
    )
    options.update(aiokafka_options(settings))
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(settings: Settings, *topics: str, **overrides) -> AIOKafkaConsumer:
    options = dict(
        bootstrap_servers=resolve_bootstrap(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        max_poll_records=settings.fetch_max_records,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    options.update(aiokafka_options(settings))
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


class BatchSender:
    """One open record batch per (topic, partition), sent when full or on :meth:`send_all`.

    The hot path appends to :meth:`batch` directly and calls :meth:`add` only when that batch is
    full. :meth:`wait` awaits every delivery and returns, per (topic, partition), the next offset
    after the last record delivered.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._batches: dict[tuple[str, int], object] = {}
        self._pending: list[tuple[tuple[str, int], int, asyncio.Future]] = []

    def batch(self, topic: str, partition: int):
        """The open batch of (topic, partition); ``append`` on it returns None when it is full."""
        slot = (topic, partition)
        batch = self._batches.get(slot)
        if batch is None:
            batch = self._batches[slot] = self._producer.create_batch()
        return batch

    async def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers=None) -> None:
        if self.batch(topic, partition).append(key=key, value=value, timestamp=None, headers=headers) is None:
            await self._send((topic, partition), self._batches.pop((topic, partition)))
            if self.batch(topic, partition).append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"record of {len(value or b'')} bytes does not fit in a batch")

    async def add_many(self, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        for key, value in records:
            await self.add(topic, partition, key, value)

    async def _send(self, slot: tuple[str, int], batch) -> None:
        size = batch.record_count()
        if size:
            future = await self._producer.send_batch(batch, slot[0], partition=slot[1])
            self._pending.append((slot, size, future))

    async def send_all(self) -> None:
        """Hand every open batch to the producer (without waiting for delivery)."""
        batches, self._batches = self._batches, {}
        for slot, batch in batches.items():
            await self._send(slot, batch)

    async def hand_off(self) -> list:
        """Send open batches and take the deliveries pending so far (to pass to :meth:`delivered`)."""
        await self.send_all()
        pending, self._pending = self._pending, []
        return pending

    @staticmethod
    async def delivered(pending: list) -> dict[tuple[str, int], int]:
        """Await the deliveries of :meth:`hand_off`; the next offset per (topic, partition)."""
        ends: dict[tuple[str, int], int] = {}
        for slot, size, future in pending:
            metadata = await future
            ends[slot] = max(ends.get(slot, 0), metadata.offset + size)
        return ends

    async def wait(self) -> dict[tuple[str, int], int]:
        """Send open batches, await all deliveries; the next offset per (topic, partition)."""
        return await self.delivered(await self.hand_off())
