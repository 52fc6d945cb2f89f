"""One gateway process's link to the pipeline: a producer, the decision waiter and the replicated tables.

Kept apart from the HTTP layer so the routes stay thin and a test can drive it directly.
"""

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Sequence
from typing import NamedTuple

import msgspec
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from agents.blocklist_entries import Blocklist
from agents.descriptor_rules import RuleBook
from agents.rules import LimitBook
from ratewarden.gateway.addresses import AddressLimits
from ratewarden.gateway.auth import UserBook
from ratewarden.gateway.history import HistoryRouter
from ratewarden.gateway.metrics import DECISION_WAIT, TIMEOUTS, WAITING
from ratewarden.gateway.net import ClientIp
from ratewarden.gateway.outbox import Outbox
from ratewarden.gateway.waiter import DecisionWaiter
from ratewarden.gateway.waiting import Waiting
from ratewarden.rls.engine import RlsEngine
from schemas.decisions import Decision
from schemas.events import RequestEvent
from streams.kafka_io import make_producer
from streams.settings import Settings
from agents.allowlist import Allowlist
from agents.control_tables import allowlist_table, blocklist_table, limits_table
from streams.stopping import bounded
from streams.tables import ControlTable
from streams.topics import ensure_topics

__all__ = ["Clock", "Gateway", "Outcome", "Request", "Unavailable"]

logger = logging.getLogger(__name__)

#: Seconds a control write (limits, users, blocklist) may take to be stored and read back.
WRITE_TIMEOUT = 15.0


class Unavailable(Exception):
    """Kafka did not take (or give back) a control write in time."""


#: What the gateway publishes one event for: ``(user_id, ip, request_type)`` or with the service's ``status``.
Request = tuple[str, str, str] | tuple[str, str, str, int | None]


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


class RequestIds:
    """Request ids: 32 hex digits, a random per-process half and a counter (``uuid4`` cost 1.5% of the gateway)."""

    def __init__(self) -> None:
        self._prefix, self._count = os.urandom(8).hex(), itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = Clock()
        self.new_id = RequestIds()
        self.users = UserBook()
        self.limits = LimitBook(settings.default_limit, settings.default_window, settings.default_algorithm)
        self.blocklist = Blocklist()
        self.allowlist = Allowlist(settings.allowlist)  # the analytics' allow-list: static seed + topic
        self.rules = RuleBook()  # descriptor rules of the rate limit service, from the limits topic
        self.client_ip = ClientIp(settings.gateway_trusted_proxies)
        self.waiter = DecisionWaiter(settings)
        self.history = HistoryRouter(settings)
        self.tables: dict[str, ControlTable] = {
            "users": ControlTable(settings, settings.users_topic, self.users.apply),
            "limits": limits_table(settings, self.limits, self.rules),
            "blocklist": blocklist_table(settings, self.blocklist),
            "allowlist": allowlist_table(settings, self.allowlist),
            "owners": self.history.table,
        }
        self.partitions = settings.partitions
        self.grpc_port: int | None = None  # the rate limit service's bound port, once serving
        self.producer = None
        self.outbox: Outbox | None = None
        self.rls = RlsEngine(settings, self.rules, self.clock, self.new_id)
        self.addresses = AddressLimits(self.limits.rules, self.rls, lambda: self.waiter.stamp)
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
        self.outbox = Outbox(self.producer, s.requests_topic, self.partitions, self.waiter.stamp)
        self.waiter.on_reply = self.outbox.landed
        self.rls.start(self.producer, counts[s.rls_hits_topic], self.waiter)
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
        """Stop every client, each step bounded (:func:`streams.stopping.bounded`): SIGTERM always ends it."""
        for task in self._tasks:
            task.cancel()
        await bounded("the gateway", "its tasks", asyncio.gather(*self._tasks, return_exceptions=True))
        await bounded("the gateway", "the history router", self.history.stop())
        if self.outbox is not None:
            await bounded("the gateway", "the outbox", self.outbox.stop())
        await bounded("the gateway", "the rate limit service's outbox", self.rls.stop())
        await bounded("the gateway", "the decision waiter", self.waiter.stop())
        for table in self.tables.values():
            await bounded("the gateway", f"the {table.topic} table", table.stop())
        if self.producer is not None:
            await bounded("the gateway", "the producer", self.producer.stop())

    async def decide(self, user_id: str, ip: str, request_type: str, status: int | None = None) -> Outcome:
        """Publish one request event and wait for its decision (None after the timeout)."""
        return (await self.decide_many(((user_id, ip, request_type, status),)))[0]

    async def decide_many(self, requests: Sequence[Request]) -> list[Outcome]:
        """Publish ``(user_id, ip, request_type[, status])`` requests; their outcomes in the same order, after
        one wait.

        An outcome whose decision did not come within the timeout (or that Kafka refused) has None. With
        ``remote_address`` rules, each address is counted first (:mod:`ratewarden.gateway.addresses`).
        """
        clock, new_id, expect, put = self.clock, self.new_id, self.waiter.expect, self.outbox.put
        refused = await self.addresses.headers([r[1] for r in requests]) if self.addresses else None
        waiting = Waiting(len(requests))
        events = []
        for index, (user_id, ip, request_type, *status) in enumerate(requests):
            event = RequestEvent(new_id(), user_id, ip, request_type, clock(), *status)
            expect(event.request_id, waiting, index)
            put(event, waiting, index, None if refused is None else refused[index])
            events.append(event)
        timer = asyncio.get_running_loop().call_later(self.settings.gateway_decision_timeout, waiting.expire)
        started = time.perf_counter()
        WAITING.inc(len(events))
        try:
            await waiting.done
        finally:
            timer.cancel()
            forget = self.waiter.forget
            for event in events:
                forget(event.request_id)
            WAITING.dec(len(events))
        decisions = waiting.decisions
        decided = len(decisions) - decisions.count(None)
        if decided < len(decisions):
            TIMEOUTS.inc(len(decisions) - decided)
        if decided:
            DECISION_WAIT.observe(time.perf_counter() - started)
        return [Outcome(event, decision) for event, decision in zip(events, decisions)]

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
