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

    aiokafka keeps one produce request in flight per broker, and ``send_batch`` waits while the
    previous batch of its partition is still queued behind it: a consumer that hands a batch over
    after every fetch would wait a broker round trip per fetch. Measured in the limiter: 10-12 ms to
    decide 1,000 events while behind, 2 ms for 324 once caught up. So, with ``hold`` (not for
    transactions, whose batches must all be in before the commit), :meth:`send_all` leaves open a
    batch whose previous batch of the same partition is not delivered yet: the records of the next
    fetches join it, and it is sent as soon as that delivery completes (a callback), or by
    :meth:`hand_off`, which sends everything. A caller holding an open batch across an ``await``
    that may suspend must take it again from :meth:`batch` afterwards.
    """

    def __init__(self, producer: AIOKafkaProducer, hold: bool = False) -> None:
        self._producer = producer
        self._hold = hold
        self._batches: dict[tuple[str, int], object] = {}
        self._pending: list[tuple[tuple[str, int], int, asyncio.Future]] = []
        self._last: dict[tuple[str, int], asyncio.Future] = {}  # latest delivery per (topic, partition)
        self._held: set[tuple[str, int]] = set()

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
            self._last[slot] = future

    async def send_all(self) -> None:
        """Hand every open batch to the producer, without waiting (with ``hold``, not those whose
        partition's previous batch is undelivered: they go when it is)."""
        batches, self._batches = self._batches, {}
        for slot, batch in batches.items():
            last = self._last.get(slot) if self._hold else None
            if last is not None and not last.done():
                self._batches[slot] = batch
                if slot not in self._held:
                    self._held.add(slot)
                    self._send_after(last, slot)
                continue
            await self._send(slot, batch)

    def _send_after(self, delivery: asyncio.Future, slot: tuple[str, int]) -> None:
        delivery.add_done_callback(lambda _: asyncio.ensure_future(self._send_held(slot)))

    async def _send_held(self, slot: tuple[str, int]) -> None:
        last = self._last.get(slot)
        if last is not None and not last.done():  # hand_off sent a newer one meanwhile: after that one
            self._send_after(last, slot)
            return
        self._held.discard(slot)
        batch = self._batches.pop(slot, None)
        if batch is not None:
            await self._send(slot, batch)

    async def hand_off(self) -> list:
        """Send every open batch and take the deliveries pending so far (to pass to :meth:`delivered`)."""
        batches, self._batches = self._batches, {}
        for slot, batch in batches.items():
            await self._send(slot, batch)
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
