"""The worker side of ``GET /requests/{user_id}``: per-user history of the decisions, served over HTTP.

A :class:`HistoryService` runs in every worker with the history role (registered in
``ratewarden.worker.create_app``); its :class:`HistoryKeeper` keeps each decisions partition it holds
in a :class:`streams.history.HistoryStore`. Beside a limiter (the default worker) the keeper is *fed
in process*: decisions partition ``p`` is written only by the owner of requests partition ``p``
(same key, same partition count), so the limiter's owner of ``p`` keeps its history, handed the
decisions it delivered once each flush completes (:class:`streams.folding.FoldingConsumer`, fed
mode: never before delivery, or under exactly-once before the transaction commit; what it did
not feed it reads from the topic). A history-only worker reads the topic in its own consumer group
(``<app_id>-history``) instead. On assignment the keeper announces ``partition -> its URL`` on the
compacted ``history-owners`` topic; the gateway reads that table, computes the user's partition
(``streams.history.partition_for``) and asks the owner.

A read is *synced*: the worker first asks the broker for the partition's end offset and answers only
once it has applied the log up to there. Every decision the gateway had seen before it sent the read
is therefore in the answer, whichever worker decided it and whichever worker owns the partition now.
A worker asked for a partition it does not hold answers 421 (Misdirected Request) and the gateway
asks again once the table has moved on.
"""

import asyncio
import hmac
import logging
import math
import os
import socket
import time
from typing import Awaitable, Callable

import msgspec
from aiohttp import web
from aiokafka import TopicPartition
from mode import Service
from prometheus_client import Counter

from schemas.users import HistoryOwner
from streams.folding import FoldingConsumer
from streams.history import Decided, HistoryStore
from streams.kafka_io import make_producer
from streams.settings import Settings
from streams.stopping import WIND_DOWN_TIMEOUT, bounded
from streams.topics import ensure_topics

__all__ = ["HistoryKeeper", "HistoryService", "MAX_PAGE", "NotServed"]

logger = logging.getLogger(__name__)

#: The largest page a history read returns.
MAX_PAGE = 1000
#: Also sweep every this many wall seconds (a quiet partition: event time does not move).
_SWEEP_EVERY = 300.0

ENTRIES = Counter("ratewarden_history_entries_total", "Decisions added to the request history")
SWEPT = Counter("ratewarden_history_swept_total", "History entries deleted as out of bounds by sweeps")
READS = Counter("ratewarden_history_reads_total", "History reads served by this worker", ["status"])


class NotServed(Exception):
    """This worker does not hold the partition (any more)."""


class HistoryKeeper(FoldingConsumer):
    """The history stores of the decisions partitions this worker holds: folded from the topic
    (subscribed, group ``<app_id>-history``) or fed by the limiter of this process (``fed``)."""

    track_position = True
    values_only = True
    #: A store writes one value per user per fold: larger steps group more of a user's decisions in
    #: one value (about 0.5 us per decision at 10,000, 1 us at 1,000, measured), a few ms per step.
    fed_slice = 10_000

    def __init__(self, settings: Settings, announce: Callable[[list[int]], Awaitable[None]], fed: bool = False) -> None:
        super().__init__(settings, fed=fed)
        self.topic = settings.decisions_topic
        self.group = None if fed else f"{settings.app_id}-history"
        self.decode = msgspec.json.Decoder(Decided).decode
        self.stores: dict[int, HistoryStore] = {}
        self._announce = announce
        self._next_sweep = time.monotonic() + _SWEEP_EVERY

    async def open(self, partitions: list[int]) -> dict[int, int]:
        """Open (or rebuild) the stores of ``partitions``, announce ownership; where each is read from."""
        s, starts = self.settings, {}
        for partition in partitions:
            tp = TopicPartition(s.decisions_topic, partition)
            store = await self._open(partition)
            begin = (await self.consumer.beginning_offsets([tp]))[tp]
            end = (await self.consumer.end_offsets([tp]))[tp]
            if store.position is not None and store.position > end:
                logger.warning("history partition %d: local copy is ahead of %s (recreated?): wiping", partition, tp)
                store.wipe()
            found = (await self.consumer.offsets_for_times({tp: int((time.time() - s.history_max_age) * 1000)}))[tp]
            start = starts[partition] = max(store.position or 0, begin, end if found is None else found.offset)
            if start != store.position:
                store.skip_to(start)
            self.stores[partition] = store
            logger.info("history partition %d: from offset %d (end %d)", partition, start, end)
        await self._announce(partitions)
        return starts

    async def _open(self, partition: int) -> HistoryStore:
        """The partition's store; a previous owner on the same disk may still be closing it."""
        s = self.settings
        path = s.var_dir / "history" / f"partition-{partition}"
        for attempt in range(100):
            try:
                return HistoryStore(path, s.history_max_count, s.history_max_age)
            except Exception as exc:  # noqa: BLE001 - rocksdict raises a bare Exception for a held lock
                if "lock" not in str(exc).lower() or attempt == 99:
                    raise
                await asyncio.sleep(0.1)
        raise AssertionError("unreachable")

    async def drop(self, partitions: list[int]) -> None:
        for partition in partitions:
            store = self.stores.pop(partition, None)
            if store is not None:
                store.close()

    async def fold(self, partition: int, decisions, end: int) -> None:
        store = self.stores.get(partition)
        if store is None:
            return
        ENTRIES.inc(store.apply(decisions, end))
        if store.sweep_due():  # by event time: bounds the directory however fast time runs
            SWEPT.inc(store.sweep())

    async def tick(self, now: float) -> None:
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY
            for store in list(self.stores.values()):
                SWEPT.inc(store.sweep())

    def on_bad(self, partition: int, bad: int) -> None:
        logger.warning("history: skipped %d bad decisions of partition %d", bad, partition)

    async def synced(self, partition: int, timeout: float) -> HistoryStore:
        """The partition's store once it holds every decision the broker had when this was called."""
        if partition not in self.stores:
            raise NotServed(partition)
        tp = TopicPartition(self.settings.decisions_topic, partition)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        end = (await asyncio.wait_for(self.consumer.end_offsets([tp]), timeout))[tp]
        while True:
            store = self.stores.get(partition)
            if store is None:
                raise NotServed(partition)
            if self.positions.get(partition, -1) >= end:
                return store
            await self.wait_progress(max(0.0, deadline - loop.time()))


class HistoryService(Service):
    """Keeps the history of the decisions partitions this worker holds and serves reads of it.

    ``fed``: the limiter of this worker feeds the history in process (``keeper`` is then attached to
    it by the composition root); otherwise the history reads the decisions topic in its own group.
    """

    def __init__(self, settings: Settings, fed: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.keeper = HistoryKeeper(settings, self._announce, fed=fed)
        self.url: str | None = None
        self.producer = self._runner = self._task = None
        self._encode = msgspec.json.Encoder().encode
        self._token = settings.history_token.get_secret_value() if settings.history_token else None
        self._worker = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def stores(self) -> dict[int, HistoryStore]:
        return self.keeper.stores

    async def on_start(self) -> None:
        s = self.settings
        await asyncio.to_thread(ensure_topics, s)
        app = web.Application()
        app.router.add_get("/history/{partition}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.history_host, s.history_port)
        await site.start()
        port = self._runner.addresses[0][1]
        host = socket.getfqdn() if s.history_host in ("0.0.0.0", "::", "") else s.history_host
        self.url = s.history_url or f"http://{host}:{port}"
        self.producer = make_producer(s)
        await self.producer.start()
        await self.keeper.start()
        logger.info("history served at %s (%s)", self.url, "fed in process" if self.keeper.fed else "from the topic")

    async def on_started(self) -> None:
        keeper = self.keeper
        self._task = keeper.supervise(self, "history", keeper.run_fed if keeper.fed else keeper.run)

    async def on_stop(self) -> None:
        await self.keeper.wind_down(self._task, WIND_DOWN_TIMEOUT)
        await self.keeper.close()
        if self.producer is not None:
            await bounded("the history", "its producer", self.producer.stop())
        await self.keeper.drop(list(self.keeper.stores))
        if self._runner is not None:
            await self._runner.cleanup()

    async def _announce(self, partitions: list[int]) -> None:
        """``partition -> this worker's URL`` on the compacted history-owners topic."""
        for partition in partitions:
            owner = HistoryOwner(partition=partition, url=self.url, worker=self._worker, since=time.time())
            await self.producer.send_and_wait(self.settings.history_owners_topic, self._encode(owner),
                                              key=str(partition).encode(), partition=0)

    async def _handle(self, request: web.Request) -> web.Response:
        status, body = await self._read(request)
        READS.labels(str(status)).inc()
        return web.Response(status=status, body=self._encode(body), content_type="application/json")

    async def _read(self, request: web.Request) -> tuple[int, dict]:
        if self._token is not None and not hmac.compare_digest(
            request.headers.get("Authorization", "").encode(), f"Bearer {self._token}".encode()
        ):
            return 401, {"detail": "missing or wrong history token"}
        try:
            partition = int(request.match_info["partition"])
            user_id = request.query["user_id"]
            limit = int(request.query.get("limit", "100"))
            before = float(request.query["before"]) if "before" in request.query else None
            wait = float(request.query.get("wait", "5"))
        except (KeyError, ValueError) as exc:
            return 400, {"detail": f"bad query: {exc}"}
        if not (1 <= limit <= MAX_PAGE and 0 < wait <= 60 and (before is None or math.isfinite(before))):
            return 400, {"detail": f"limit must be 1..{MAX_PAGE}, wait 0..60 s, before finite"}
        try:
            store = await self.keeper.synced(partition, wait)
        except NotServed:
            return 421, {"detail": f"partition {partition} is not served by {self.url}", "partitions": sorted(self.stores)}
        except (asyncio.TimeoutError, TimeoutError):
            return 503, {"detail": f"partition {partition} did not catch up within {wait:g} s"}
        entries, next_before = store.page(user_id, limit, before)
        return 200, {
            "user_id": user_id,
            "partition": partition,
            "requests": entries,  # HistoryEntry: ``status`` only where the request had one
            "next_before": next_before,
        }
