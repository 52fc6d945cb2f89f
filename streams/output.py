"""Where the limiter's records go, under either processing guarantee.

* ``at_least_once``: one idempotent producer for every partition; a flush hands off the records
  sent so far, and once they are delivered the limiter commits consumer offsets and writes RocksDB,
  while it goes on deciding (the flush does not stall the hot path). A crash re-decides events since the last
  flush (same verdicts: counting is restored exactly from the changelog's position markers).
* ``exactly_once``: one *transactional* producer per assigned input partition, with the stable
  transactional id ``<app_id>-limiter-<p>``. Decisions, dead letters, changelog records and the
  consumer offsets of partition ``p`` are committed in one transaction per flush. A new owner of
  ``p`` initialises the same transactional id, which fences a zombie owner and aborts whatever it
  left open, so read_committed consumers see each decision exactly once.
"""

import asyncio
import logging
from typing import Awaitable

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams.kafka_io import BatchSender, make_producer
from streams.settings import Settings

__all__ = ["Outputs", "Ends"]

Ends = dict[tuple[str, int], int]  # the next offset per (topic, partition) after a delivery

logger = logging.getLogger(__name__)


class Outputs:
    """Producers and batch senders per input partition, and the per-flush commit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        self._shared: tuple[AIOKafkaProducer, BatchSender] | None = None
        self._owned: dict[int, tuple[AIOKafkaProducer, BatchSender]] = {}

    async def start(self) -> None:
        if not self.exactly_once:
            producer = make_producer(self.settings)
            await producer.start()
            self._shared = (producer, BatchSender(producer))

    async def open(self, partition: int) -> None:
        """Exactly-once: a transactional producer for ``partition`` (fences its previous owner)."""
        if not self.exactly_once or partition in self._owned:
            return
        producer = make_producer(
            self.settings,
            transactional_id=f"{self.settings.app_id}-limiter-{partition}",
            transaction_timeout_ms=max(60_000, int(self.settings.flush_interval * 10_000)),
        )
        await producer.start()  # initialises the transactional id: fences and aborts the old owner
        await producer.begin_transaction()
        self._owned[partition] = (producer, BatchSender(producer))

    async def send_all(self) -> None:
        """Hand every open batch to its producer (end of a fetched batch; no waiting)."""
        for _, sender in ([self._shared] if self._shared is not None else list(self._owned.values())):
            await sender.send_all()

    def sender(self, partition: int) -> BatchSender:
        return self._shared[1] if self._shared is not None else self._owned[partition][1]

    def producer(self, partition: int) -> AIOKafkaProducer | None:
        """The non-transactional producer that may write abort markers (None under exactly-once)."""
        return self._shared[0] if self._shared is not None else None

    async def commit(self, positions: dict[int, int], group_id: str, topic: str, consumer) -> Awaitable[Ends]:
        """Hand off everything sent so far; return the completion to await, which yields the next offset
        per (topic, partition) once delivered and committed with the consumer ``positions``.

        ``at_least_once``: the completion waits for delivery, then commits the offsets; it may overlap
        with further sends (which it does not wait for), so the caller can go on deciding.
        ``exactly_once``: the completion commits each partition's transaction; the caller must await
        it before sending more.
        """
        if self._shared is not None:
            return self._deliver_then_commit(await self._shared[1].hand_off(), positions, topic, consumer)
        return self._commit_transactions(positions, group_id, topic)

    async def _commit_transactions(self, positions: dict[int, int], group_id: str, topic: str) -> Ends:
        """One producer per partition: their transactions commit concurrently (round trips overlap)."""
        ends: Ends = {}
        for partition_ends in await asyncio.gather(*(
            self._commit_transaction(partition, producer, sender, positions.get(partition), group_id, topic)
            for partition, (producer, sender) in list(self._owned.items())
        )):
            ends.update(partition_ends)
        return ends

    @staticmethod
    async def _commit_transaction(partition: int, producer: AIOKafkaProducer, sender: BatchSender,
                                  position: int | None, group_id: str, topic: str) -> Ends:
        ends = await sender.wait()
        if position is not None:
            await producer.send_offsets_to_transaction({TopicPartition(topic, partition): position}, group_id)
        await producer.commit_transaction()
        await producer.begin_transaction()
        return ends

    @staticmethod
    async def _deliver_then_commit(pending: list, positions: dict[int, int], topic: str, consumer) -> Ends:
        ends = await BatchSender.delivered(pending)
        if positions:
            try:
                await consumer.commit({TopicPartition(topic, p): o for p, o in positions.items()})
            except KafkaError as exc:
                # Advisory only: restore seeks to the changelog's position markers, not to these.
                logger.warning("offset commit failed (%r); the changelog position stands", exc)
        return ends

    async def close(self, partition: int) -> None:
        """Exactly-once: stop the producer of a released partition (after its last commit)."""
        owned = self._owned.pop(partition, None)
        if owned is not None:
            producer = owned[0]
            try:
                await producer.abort_transaction()  # empty: the flush before release committed all
            except KafkaError as exc:
                logger.warning("partition %d: abort on release failed: %r", partition, exc)
            await producer.stop()

    async def stop(self) -> None:
        for partition in list(self._owned):
            await self.close(partition)
        if self._shared is not None:
            await self._shared[0].stop()
            self._shared = None
