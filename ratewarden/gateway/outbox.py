"""Publishing request events: what is asked for in one event-loop turn goes out as one batch per partition.

``AIOKafkaProducer.send`` costs 12-17 µs of CPU per record here (metadata check, partitioner,
accumulator, one future per record); appending to a record batch costs about 2 µs (measured on
this machine, 10,000 records to a local broker). Under load many requests arrive in the same turn
of the loop, so the outbox collects them and a task sends one batch per requests partition,
stamped with this gateway's reply headers. A batch Kafka refuses gives up its requests (their
callers answer fail-open or fail-closed at once, not after the timeout).
"""

import asyncio
import functools
import logging
from collections import deque
from operator import attrgetter

import msgspec

from ratewarden.gateway.waiting import Waiting
from schemas.descriptors import DescriptorHit
from schemas.events import RequestEvent
from streams.history import partition_for

__all__ = ["FULL_BATCH", "HOLD_LIMIT", "MAX_IN_FLIGHT", "Outbox"]

logger = logging.getLogger(__name__)

#: Small batches in flight (sent, replies not all back) before new requests wait for one to land.
#: Like Nagle's algorithm: an idle gateway sends at once; a busy one sends fewer, larger batches, and
#: every hop (produce, the limiter's fetch and produce, the reply fetch) costs the broker per request,
#: not per record. 32 connections here: 1 in flight 5,255 decisions/s; 2: 5,552-5,849; 3: 5,116;
#: unbounded 5,593, with the broker at 58% of a core for 2 and 67% unbounded (``bench/gateway_bench.py``).
MAX_IN_FLIGHT = 2
#: Queued requests that go out at once, and are not counted as a flight: holding them saves nothing.
FULL_BATCH = 100
#: Seconds after which a flight counts as landed even if replies are missing (a slow or absent worker).
#: Longer than a round trip under load (8-12 ms here), so that replies, not this timer, clock the flights:
#: at 5 ms a loaded gateway let a third and fourth flight go, each costing CPU that slowed every round
#: trip further. Paced by vegeta at 1,400 requests/s (64 connections, ours alone, alternating): p99
#: 46-87 ms (median 75, 7 runs) at 5 ms, 32-59 ms (median 46, 4 runs) at 15 ms, 34 and 58 ms at 30 ms;
#: 32-connection throughput unchanged within the noise (2,203-3,016/s against 2,511-2,539/s).
HOLD_LIMIT = 0.015
#: Users whose partition is remembered (the same as the limiter's and the history's: ``partition_for``).
MAX_REMEMBERED = 100_000

Item = tuple[RequestEvent | DescriptorHit, Waiting, int, list | None]  # headers: None for the stamp alone


class Outbox:
    """``key_of``: a record's key (its partition); request events by ``user_id``, descriptor hits by counter.
    ``max_in_flight``: see :data:`MAX_IN_FLIGHT`."""

    def __init__(self, producer, topic: str, partitions: int, stamp: list[tuple[str, bytes]],
                 key_of=attrgetter("user_id"), max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.producer, self.topic, self.partitions, self.stamp = producer, topic, partitions, stamp
        self.key_of, self.max_in_flight = key_of, max_in_flight
        self._queued: dict[int, list[Item]] = {}
        self._partition_of: dict[str, int] = {}  # murmur2 in Python cost 5% of a batch's gateway CPU
        self._count = 0  # queued requests
        self._scheduled = False
        self._flights: deque[list] = deque()  # [replies still expected, hold timer], oldest first
        self._encode = msgspec.json.Encoder().encode
        self._sending: set[asyncio.Task] = set()
        self.refused = 0  # requests Kafka did not take (their callers answered without a decision)

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def put(self, event: RequestEvent | DescriptorHit, waiting: Waiting, index: int,
            headers: list | None = None) -> None:
        """Queue ``event``, the ``index``-th request ``waiting`` waits for; ``headers``: its own, with the stamp."""
        key = self.key_of(event)
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) >= MAX_REMEMBERED:
                self._partition_of.clear()
            partition = self._partition_of[key] = partition_for(key, self.partitions)
        queue = self._queued.get(partition)
        if queue is None:
            queue = self._queued[partition] = []
        queue.append((event, waiting, index, headers))
        self._count += 1
        if not self._scheduled and (len(self._flights) < self.max_in_flight or self._count >= FULL_BATCH):
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def landed(self, count: int) -> None:
        """``count`` replies arrived: they count against the oldest flights (replies come back roughly in order)."""
        flights = self._flights
        while count > 0 and flights:
            flight = flights[0]
            taken = min(count, flight[0])
            flight[0] -= taken
            count -= taken
            if flight[0] <= 0:
                self._landed(flight)

    def _landed(self, flight: list) -> None:
        try:
            self._flights.remove(flight)
        except ValueError:  # landed already
            return
        flight[1].cancel()
        if self._queued and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        queued, count, self._queued, self._count, self._scheduled = self._queued, self._count, {}, 0, False
        if not queued:
            return
        if count < FULL_BATCH:
            flight = [count, None]
            flight[1] = asyncio.get_running_loop().call_later(HOLD_LIMIT, self._landed, flight)
            self._flights.append(flight)
        task = asyncio.ensure_future(self._send(queued))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, queued: dict[int, list[Item]]) -> None:
        encode, stamp, key_of = self._encode, self.stamp, self.key_of
        for partition, items in queued.items():
            start = 0
            while start < len(items):
                batch, end = self.producer.create_batch(), start
                while end < len(items):
                    event, _, _, headers = items[end]
                    if batch.append(key=key_of(event).encode(), value=encode(event), timestamp=None,
                                    headers=stamp if headers is None else headers) is None:
                        break
                    end += 1
                await self._send_batch(batch, partition, items[start:end])
                start = end

    async def _send_batch(self, batch, partition: int, items: list[Item]) -> None:
        try:
            delivery = await self.producer.send_batch(batch, self.topic, partition=partition)
        except Exception as exc:  # noqa: BLE001 - every waiting caller must learn of it
            self._give_up(partition, items, exc)
            return
        delivery.add_done_callback(functools.partial(self._check_delivery, partition, items))

    def _check_delivery(self, partition: int, items: list[Item], delivery: asyncio.Future) -> None:
        if not delivery.cancelled() and delivery.exception() is not None:
            self._give_up(partition, items, delivery.exception())

    def _give_up(self, partition: int, items: list[Item], exc: BaseException) -> None:
        before, self.refused = self.refused, self.refused + len(items)
        if not before or self.refused // 1_000 > before // 1_000:  # the first, then a line per 1,000 refused
            logger.warning("%d requests not published to %s[%d] (%d so far): %r", len(items), self.topic,
                           partition, self.refused, exc)
        for _, waiting, index, _ in items:
            waiting.give_up(index)

    async def stop(self) -> None:
        await asyncio.gather(*self._sending, return_exceptions=True)
