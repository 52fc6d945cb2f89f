"""Where the limiter's records go, one class per processing guarantee (:func:`make_outputs` picks).

* :class:`AtLeastOnceOutputs`: one idempotent producer for every partition. A flush *hands off* the
  records sent so far; its completion waits for their delivery, then commits the consumer offsets,
  while the limiter goes on deciding (the flush does not stall the hot path). A crash re-decides the
  events since the last flush (same verdicts: counting is restored exactly from the changelog's
  position markers).
* :class:`ExactlyOnceOutputs`: one *transactional* producer per assigned input partition, with the
  stable transactional id ``<app_id>-limiter-<p>``. Decisions, dead letters, changelog records and
  the consumer offsets of partition ``p`` are committed in one transaction per flush. A new owner of
  ``p`` initialises the same transactional id, which fences a zombie owner and aborts whatever it
  left open, so read_committed consumers see each decision exactly once.
"""

import asyncio
import logging
from typing import Awaitable, Callable, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams.kafka_io import BatchSender, make_producer
from streams.settings import Settings

__all__ = ["AtLeastOnceOutputs", "Ends", "ExactlyOnceOutputs", "Outputs", "make_outputs"]

Ends = dict[tuple[str, int], int]  # the next offset per (topic, partition) after a delivery

logger = logging.getLogger(__name__)


class Outputs(Protocol):
    """Producers and batch senders per input partition, and the hand-off that ends a flush."""

    #: False: the caller must await a flush's completion before it sends more (a transaction is open).
    completes_in_background: bool

    async def start(self) -> None: ...

    async def open(self, partition: int) -> None: ...

    async def close(self, partition: int) -> None: ...

    def sender(self, partition: int) -> BatchSender: ...

    async def send_all(self) -> None: ...

    async def write_marker(self, topic: str, partition: int, key: bytes, value: bytes) -> None: ...

    async def hand_off(self, positions: dict[int, int], consumer) -> Awaitable[Ends]: ...

    async def stop(self) -> None: ...


def make_outputs(settings: Settings, role: str = "limiter", group: str | None = None,
                 input_topic: str | None = None) -> Outputs:
    """The outputs of ``settings.processing_guarantee`` for a counting service (``role``: the limiter by
    default), with producers made from ``settings``; transactional ids are ``<app_id>-<role>-<p>``."""
    group = settings.limiter_group if group is None else group
    input_topic = settings.requests_topic if input_topic is None else input_topic
    if settings.processing_guarantee == "exactly_once":
        timeout_ms = max(60_000, int(settings.flush_interval * 10_000))
        return ExactlyOnceOutputs(
            lambda partition: make_producer(settings, transactional_id=f"{settings.app_id}-{role}-{partition}",
                                            transaction_timeout_ms=timeout_ms),
            group, input_topic,
        )
    return AtLeastOnceOutputs(lambda: make_producer(settings), input_topic)


class AtLeastOnceOutputs:
    """One idempotent producer; a flush hands off, then delivers, then commits the input offsets."""

    completes_in_background = True

    def __init__(self, new_producer: Callable[[], AIOKafkaProducer], input_topic: str) -> None:
        self._new_producer = new_producer
        self._input_topic = input_topic
        self._producer: AIOKafkaProducer | None = None
        self._sender: BatchSender | None = None

    async def start(self) -> None:
        self._producer = self._new_producer()
        await self._producer.start()
        self._sender = BatchSender(self._producer, hold=True)

    async def open(self, partition: int) -> None:
        """Nothing to claim: the one producer writes every partition."""

    async def close(self, partition: int) -> None:
        """Nothing to release (the flush before a release delivered everything)."""

    def sender(self, partition: int) -> BatchSender:
        return self._sender

    async def send_all(self) -> None:
        """Hand every open batch to the producer (end of a fetched batch; no waiting)."""
        await self._sender.send_all()

    async def write_marker(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        """Write one record now and wait for its delivery."""
        await self._producer.send_and_wait(topic, value, key=key, partition=partition)

    async def hand_off(self, positions: dict[int, int], consumer) -> Awaitable[Ends]:
        """Hand every record sent so far to the producer; return the completion, which delivers them,
        then commits ``positions`` (next input offset per partition) in ``consumer``'s group, and
        yields the next offset per (topic, partition). It does not wait for records sent later, so
        the caller may go on deciding while it runs."""
        return self._deliver_then_commit(await self._sender.hand_off(), positions, consumer)

    async def _deliver_then_commit(self, pending: list, positions: dict[int, int], consumer) -> Ends:
        ends = await BatchSender.delivered(pending)
        if positions:
            try:
                await consumer.commit({TopicPartition(self._input_topic, p): o for p, o in positions.items()})
            except KafkaError as exc:
                # Advisory only: restore seeks to the changelog's position markers, not to these.
                logger.warning("offset commit failed (%r); the changelog position stands", exc)
        return ends

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = self._sender = None


class ExactlyOnceOutputs:
    """A transactional producer per partition; a flush commits each partition's transaction."""

    completes_in_background = False

    def __init__(self, new_producer: Callable[[int], AIOKafkaProducer], group_id: str, input_topic: str) -> None:
        self._new_producer = new_producer
        self._group_id = group_id
        self._input_topic = input_topic
        self._owned: dict[int, tuple[AIOKafkaProducer, BatchSender]] = {}

    async def start(self) -> None:
        """Nothing to start: producers come with the partitions (:meth:`open`)."""

    async def open(self, partition: int) -> None:
        """A transactional producer for ``partition``; starting it fences the previous owner."""
        if partition in self._owned:
            return
        producer = self._new_producer(partition)
        await producer.start()  # initialises the transactional id: fences and aborts the old owner
        await producer.begin_transaction()
        self._owned[partition] = (producer, BatchSender(producer))

    def sender(self, partition: int) -> BatchSender:
        return self._owned[partition][1]

    async def send_all(self) -> None:
        """Hand every open batch to its producer (end of a fetched batch; no waiting)."""
        for _, sender in list(self._owned.values()):
            await sender.send_all()

    async def write_marker(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        """Add one record to the partition's open transaction (committed with the next flush)."""
        await self.sender(partition).add(topic, partition, key, value)

    async def hand_off(self, positions: dict[int, int], consumer) -> Awaitable[Ends]:
        """Return the completion that commits every partition's transaction, with the offset of
        ``positions`` each; the caller must await it before it sends more."""
        return self._commit_transactions(positions)

    async def _commit_transactions(self, positions: dict[int, int]) -> Ends:
        """The partitions' transactions commit concurrently (their round trips overlap)."""
        ends: Ends = {}
        for partition_ends in await asyncio.gather(*(
            self._commit_transaction(partition, producer, sender, positions.get(partition))
            for partition, (producer, sender) in list(self._owned.items())
        )):
            ends.update(partition_ends)
        return ends

    async def _commit_transaction(self, partition: int, producer: AIOKafkaProducer, sender: BatchSender,
                                  position: int | None) -> Ends:
        ends = await sender.wait()
        if position is not None:
            await producer.send_offsets_to_transaction({TopicPartition(self._input_topic, partition): position},
                                                       self._group_id)
        await producer.commit_transaction()
        await producer.begin_transaction()
        return ends

    async def close(self, partition: int) -> None:
        """Stop the producer of a released partition (after its last commit)."""
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
