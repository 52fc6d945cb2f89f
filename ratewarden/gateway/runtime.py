"""One gateway process's link to the pipeline: a producer, the decision waiter and the replicated tables.

Kept apart from the HTTP layer so the routes stay thin and a test can drive it directly.
"""

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Sequence
from typing import NamedTuple

import msgspec
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from agents.rules import Blocklist, LimitBook
from ratewarden.gateway.auth import UserBook
from ratewarden.gateway.history import HistoryRouter
from ratewarden.gateway.metrics import DECISION_WAIT, TIMEOUTS, WAITING
from ratewarden.gateway.net import ClientIp
from ratewarden.gateway.waiter import DecisionWaiter
from schemas.decisions import Decision
from schemas.events import RequestEvent
from streams.history import partition_for
from streams.kafka_io import make_producer
from streams.settings import Settings
from agents.control_tables import blocklist_table, limits_table
from streams.tables import ControlTable
from streams.topics import ensure_topics

__all__ = ["Clock", "Gateway", "Outcome", "Unavailable"]

logger = logging.getLogger(__name__)

#: Seconds a control write (limits, users, blocklist) may take to be stored and read back.
WRITE_TIMEOUT = 15.0


class Unavailable(Exception):
    """Kafka did not take (or give back) a control write in time."""


class Outcome(NamedTuple):
    event: RequestEvent
    decision: Decision | None  # None: no decision within the timeout (fail open or closed)


class Clock:
    """Wall-clock seconds, strictly increasing within the process (an HTTP request has no other event time)."""

    def __init__(self, source=time.time) -> None:
        self._source, self._last = source, 0.0

    def __call__(self) -> float:
        now = self._source()
        if now <= self._last:
            now = self._last + 1e-6
        self._last = now
        return now


def _forward_failure(future: asyncio.Future, delivery: asyncio.Future) -> None:
    if not future.done() and not delivery.cancelled() and delivery.exception() is not None:
        future.set_exception(delivery.exception())


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = Clock()
        self.users = UserBook()
        self.limits = LimitBook(settings.default_limit, settings.default_window, settings.default_algorithm)
        self.blocklist = Blocklist()
        self.client_ip = ClientIp(settings.gateway_trusted_proxies)
        self.waiter = DecisionWaiter(settings)
        self.history = HistoryRouter(settings)
        self.tables: dict[str, ControlTable] = {
            "users": ControlTable(settings, settings.users_topic, self.users.apply),
            "limits": limits_table(settings, self.limits),
            "blocklist": blocklist_table(settings, self.blocklist),
            "owners": self.history.table,
        }
        self.partitions = settings.partitions
        self.producer = None
        self.failure: BaseException | None = None
        self._tasks: list[asyncio.Future] = []
        self._encode = msgspec.json.Encoder().encode

    async def start(self) -> None:
        s = self.settings
        counts = await asyncio.to_thread(ensure_topics, s)
        self.partitions = counts[s.requests_topic]
        self.producer = make_producer(s)
        await self.producer.start()
        for table in self.tables.values():
            await table.start(counts[table.topic])
            await table.catch_up()
        await self.waiter.start(counts[s.replies_topic])
        await self.history.start(counts[s.decisions_topic])
        self._tasks = [asyncio.ensure_future(t.run()) for t in self.tables.values()]
        self._tasks.append(asyncio.ensure_future(self.waiter.run()))
        for task in self._tasks:
            task.add_done_callback(self._on_exit)
        logger.info("gateway ready: %d users, %d limits, %d blocklist entries", len(self.users), len(self.limits), len(self.blocklist))

    def _on_exit(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failure = task.exception()
            logger.error("gateway task failed: %r", self.failure)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.history.stop()
        await self.waiter.stop()
        for table in self.tables.values():
            await table.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def decide(self, user_id: str, ip: str, request_type: str) -> Outcome:
        """Publish one request event and wait for its decision (None after the timeout)."""
        event = RequestEvent(uuid.uuid4().hex, user_id, ip, request_type, self.clock())
        future = self.waiter.expect(event.request_id)
        started = time.perf_counter()
        WAITING.inc()
        try:
            decision = await asyncio.wait_for(self._publish(event, future), self.settings.gateway_decision_timeout)
            DECISION_WAIT.observe(time.perf_counter() - started)
        except (asyncio.TimeoutError, TimeoutError):
            TIMEOUTS.inc()
            decision = None
        except KafkaError as exc:
            logger.warning("request %s not published: %r", event.request_id, exc)
            decision = None
        finally:
            self.waiter.forget(event.request_id)
            WAITING.dec()
        return Outcome(event, decision)

    async def decide_many(self, requests: Sequence[tuple[str, str, str]]) -> list[Outcome]:
        """Publish many ``(user_id, ip, request_type)`` requests at once; their outcomes in the same order.

        One record batch per requests partition and one wait for all: an outcome whose decision did
        not come within the timeout (or whose batch Kafka refused) has None.
        """
        events = [RequestEvent(uuid.uuid4().hex, user_id, ip, request_type, self.clock())
                  for user_id, ip, request_type in requests]
        futures = [self.waiter.expect(event.request_id) for event in events]
        started = time.perf_counter()
        WAITING.inc(len(events))
        try:
            async with asyncio.timeout(self.settings.gateway_decision_timeout):
                await self._publish_many(events, futures)
                await asyncio.wait(futures)
        except (asyncio.TimeoutError, TimeoutError):
            pass
        except KafkaError as exc:
            logger.warning("%d requests not published: %r", len(events), exc)
        finally:
            for event in events:
                self.waiter.forget(event.request_id)
            WAITING.dec(len(events))
        decisions = [f.result() if f.done() and not f.cancelled() and f.exception() is None else None for f in futures]
        missing = decisions.count(None)
        if missing:
            TIMEOUTS.inc(missing)
        if missing < len(decisions):
            DECISION_WAIT.observe(time.perf_counter() - started)
        return [Outcome(event, decision) for event, decision in zip(events, decisions)]

    async def _publish_many(self, events: list[RequestEvent], futures: list[asyncio.Future]) -> None:
        by_partition: dict[int, list[int]] = {}
        for i, event in enumerate(events):
            by_partition.setdefault(partition_for(event.user_id, self.partitions), []).append(i)
        topic, stamp, encode = self.settings.requests_topic, self.waiter.stamp, self._encode
        for partition, indexes in by_partition.items():
            batch, first = self.producer.create_batch(), 0
            for n, i in enumerate(indexes):
                event = events[i]
                if batch.append(key=event.user_id.encode(), value=encode(event), timestamp=None, headers=stamp) is None:
                    await self._send_batch(batch, topic, partition, [futures[j] for j in indexes[first:n]])
                    batch, first = self.producer.create_batch(), n
                    batch.append(key=event.user_id.encode(), value=encode(event), timestamp=None, headers=stamp)
            await self._send_batch(batch, topic, partition, [futures[j] for j in indexes[first:]])

    async def _send_batch(self, batch, topic: str, partition: int, futures: list[asyncio.Future]) -> None:
        delivery = await self.producer.send_batch(batch, topic, partition=partition)
        for future in futures:
            delivery.add_done_callback(functools.partial(_forward_failure, future))

    async def _publish(self, event: RequestEvent, future: asyncio.Future) -> Decision:
        partition = partition_for(event.user_id, self.partitions)  # what the limiter and the history use
        delivery = await self.producer.send(self.settings.requests_topic, self._encode(event),
                                            key=event.user_id.encode(), partition=partition, headers=self.waiter.stamp)
        delivery.add_done_callback(functools.partial(_forward_failure, future))
        return await future

    async def write(self, table: str, key: str, value: bytes | None) -> None:
        """Write one record to a compacted control topic and wait until this gateway's table has it."""
        control = self.tables[table]
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                sent = await self.producer.send_and_wait(control.topic, value, key=key.encode())
                tp = TopicPartition(sent.topic, sent.partition)
                while await control.consumer.position(tp) <= sent.offset:
                    await asyncio.sleep(0.005)
        except (asyncio.TimeoutError, TimeoutError, KafkaError) as exc:
            raise Unavailable(f"writing to {control.topic} failed: {exc!r}") from None
