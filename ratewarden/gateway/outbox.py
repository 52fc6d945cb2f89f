"""Publishing request events: what is asked for in one event-loop turn goes out as one batch per partition.

``AIOKafkaProducer.send`` costs 12-17 µs of CPU per record here (metadata check, partitioner,
accumulator, one future per record); appending to a record batch costs about 2 µs (measured on
this machine, 10,000 records to a local broker). Under load many requests arrive in the same turn
of the loop, so the outbox collects them and a task sends one batch per requests partition,
stamped with this gateway's reply headers. A batch Kafka refuses fails the futures of its requests
(their callers answer fail-open or fail-closed).
"""

import asyncio
import functools
import logging

import msgspec

from schemas.events import RequestEvent
from streams.history import partition_for

__all__ = ["Outbox"]

logger = logging.getLogger(__name__)


#: Batches in flight (sent, decisions not all back) before new requests wait for one of them to land.
#: Like Nagle's algorithm: an idle gateway sends at once; a busy one sends fewer, larger batches, and
#: every hop (produce, the limiter's fetch and produce, the reply fetch) costs the broker per request,
#: not per record. 32 connections here: 1 in flight 5,255 decisions/s; 2: 5,552-5,849; 3: 5,116;
#: unbounded 5,593, with the broker at 58% of a core for 2 and 67% unbounded (``bench/gateway_bench.py``).
MAX_IN_FLIGHT = 2
#: Seconds after which a batch counts as landed even if decisions are missing (a slow or absent worker).
HOLD_LIMIT = 0.005


class Outbox:
    def __init__(self, producer, topic: str, partitions: int, stamp: list[tuple[str, bytes]]) -> None:
        self.producer, self.topic, self.partitions, self.stamp = producer, topic, partitions, stamp
        self._queued: dict[int, list[tuple[RequestEvent, asyncio.Future]]] = {}
        self._scheduled = False
        self.in_flight = 0
        self._encode = msgspec.json.Encoder().encode
        self._sending: set[asyncio.Task] = set()

    def put(self, event: RequestEvent, future: asyncio.Future) -> None:
        """Queue ``event``; ``future`` gets the delivery's exception if Kafka refuses it."""
        partition = partition_for(event.user_id, self.partitions)  # what the limiter and the history use
        queue = self._queued.get(partition)
        if queue is None:
            queue = self._queued[partition] = []
        queue.append((event, future))
        if not self._scheduled and self.in_flight < MAX_IN_FLIGHT:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        queued, self._queued, self._scheduled = self._queued, {}, False
        if not queued:
            return
        flight = _Flight(self, sum(map(len, queued.values())))
        for items in queued.values():
            for _, future in items:
                future.add_done_callback(flight.one_landed)
        self.in_flight += 1
        flight.timer = asyncio.get_running_loop().call_later(HOLD_LIMIT, flight.landed)
        task = asyncio.ensure_future(self._send(queued))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, queued: dict[int, list[tuple[RequestEvent, asyncio.Future]]]) -> None:
        for partition, items in queued.items():
            start = 0
            while start < len(items):
                batch, end = self.producer.create_batch(), start
                while end < len(items):
                    event = items[end][0]
                    if batch.append(key=event.user_id.encode(), value=self._encode(event), timestamp=None,
                                    headers=self.stamp) is None:
                        break
                    end += 1
                await self._send_batch(batch, partition, [future for _, future in items[start:end]])
                start = end

    async def _send_batch(self, batch, partition: int, futures: list[asyncio.Future]) -> None:
        try:
            delivery = await self.producer.send_batch(batch, self.topic, partition=partition)
        except Exception as exc:  # noqa: BLE001 - every waiting caller must learn of it
            logger.warning("%d requests not published to %s[%d]: %r", len(futures), self.topic, partition, exc)
            _fail(futures, exc)
            return
        delivery.add_done_callback(functools.partial(_forward_failure, futures))

    def _landed(self) -> None:
        self.in_flight -= 1
        if self._queued and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    async def stop(self) -> None:
        await asyncio.gather(*self._sending, return_exceptions=True)


class _Flight:
    __slots__ = ("outbox", "waiting", "timer")

    def __init__(self, outbox: Outbox, waiting: int) -> None:
        self.outbox, self.waiting, self.timer = outbox, waiting, None

    def one_landed(self, _future) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.landed()

    def landed(self) -> None:
        if self.outbox is not None:
            outbox, self.outbox = self.outbox, None
            self.timer.cancel()
            outbox._landed()


def _forward_failure(futures: list[asyncio.Future], delivery: asyncio.Future) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        _fail(futures, delivery.exception())


def _fail(futures: list[asyncio.Future], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)
