"""The worker side of ``GET /requests/{user_id}``: per-user history of the decisions, served over HTTP.

A :class:`HistoryService` runs in every worker (registered in ``ratewarden.worker.create_app``). It reads
the ``decisions`` topic in its own consumer group (``<app_id>-history``), so each decisions
partition is kept by exactly one worker, in a :class:`streams.history.HistoryStore`. On assignment
it announces ``partition -> its URL`` on the compacted ``history-owners`` topic; the gateway reads
that table, computes the user's partition (``streams.history.partition_for``) and asks the owner.

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

import msgspec
from aiohttp import web
from aiokafka import ConsumerRebalanceListener, TopicPartition
from mode import Service
from prometheus_client import Counter

from schemas.users import HistoryOwner
from streams.history import Decided, HistoryStore
from streams.kafka_io import make_consumer, make_producer
from streams.settings import Settings
from streams.topics import ensure_topics

__all__ = ["HistoryService", "MAX_PAGE"]

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


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: "HistoryService") -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked) -> None:
        self._service.release([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned) -> None:
        await self._service.acquire([tp.partition for tp in assigned])


class HistoryService(Service):
    """Keeps the history of the decisions partitions this worker is assigned and serves reads of it."""

    def __init__(self, settings: Settings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.stores: dict[int, HistoryStore] = {}
        self.url: str | None = None
        self.consumer = self.producer = self._runner = None
        self._decode = msgspec.json.Decoder(Decided).decode
        self._encode = msgspec.json.Encoder().encode
        self._progress = asyncio.Event()
        self._stopping = asyncio.Event()
        self._token = settings.history_token.get_secret_value() if settings.history_token else None
        self._worker = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def group(self) -> str:
        return f"{self.settings.app_id}-history"

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
        # read_committed: with exactly_once, only committed decisions (and the end offset is the LSO)
        self.consumer = make_consumer(s, group_id=self.group, isolation_level="read_committed")
        await self.consumer.start()
        self.consumer.subscribe([s.decisions_topic], listener=_Rebalance(self))
        logger.info("history served at %s", self.url)

    async def on_started(self) -> None:
        self._task = asyncio.ensure_future(self.run())
        self._task.add_done_callback(self._on_exit)

    def _on_exit(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("history crashed: %r", task.exception())
            asyncio.ensure_future(self.crash(task.exception()))

    async def on_stop(self) -> None:
        self._stopping.set()
        task = getattr(self, "_task", None)
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=10)
            task.cancel()
        for client in (self.consumer, self.producer):
            if client is not None:
                await client.stop()
        self.release(list(self.stores))
        if self._runner is not None:
            await self._runner.cleanup()

    async def acquire(self, partitions: list[int]) -> None:
        """Open (or rebuild) the stores of newly assigned partitions, seek, and announce ownership."""
        s = self.settings
        for partition in partitions:
            tp = TopicPartition(s.decisions_topic, partition)
            store = await self._open(partition)
            begin = (await self.consumer.beginning_offsets([tp]))[tp]
            end = (await self.consumer.end_offsets([tp]))[tp]
            if store.position is not None and store.position > end:
                logger.warning("history partition %d: local copy is ahead of %s (recreated?): wiping", partition, tp)
                store.wipe()
            found = (await self.consumer.offsets_for_times({tp: int((time.time() - s.history_max_age) * 1000)}))[tp]
            start = max(store.position or 0, begin, end if found is None else found.offset)
            if start != store.position:
                store.skip_to(start)
            self.consumer.seek(tp, start)
            self.stores[partition] = store
            logger.info("history partition %d: from offset %d (end %d)", partition, start, end)
        owners = s.history_owners_topic
        for partition in partitions:
            owner = HistoryOwner(partition=partition, url=self.url, worker=self._worker, since=time.time())
            await self.producer.send_and_wait(owners, self._encode(owner), key=str(partition).encode(), partition=0)

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

    def release(self, partitions: list[int]) -> None:
        for partition in partitions:
            store = self.stores.pop(partition, None)
            if store is not None:
                store.close()

    async def run(self) -> None:
        """Apply fetched decisions to the stores until the service stops."""
        next_sweep = time.monotonic() + _SWEEP_EVERY
        while not self._stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=200, max_records=self.settings.fetch_max_records)
            for tp, records in batches.items():
                store = self.stores.get(tp.partition)
                if store is None or not records:
                    continue
                decisions = []
                for record in records:
                    try:
                        decisions.append(self._decode(record.value))
                    except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
                        logger.warning("history: skipping bad decision at %s@%d: %s", tp, record.offset, exc)
                ENTRIES.inc(store.apply(decisions, records[-1].offset + 1))
                if store.sweep_due():  # by event time: bounds the directory however fast time runs
                    SWEPT.inc(store.sweep())
            self._progress.set()
            self._progress = asyncio.Event()
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + _SWEEP_EVERY
                for store in list(self.stores.values()):
                    SWEPT.inc(store.sweep())

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
            if await self.consumer.position(tp) >= end:
                return store
            await asyncio.wait_for(self._progress.wait(), max(0.0, deadline - loop.time()))

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
            store = await self.synced(partition, wait)
        except NotServed:
            return 421, {"detail": f"partition {partition} is not served by {self.url}", "partitions": sorted(self.stores)}
        except (asyncio.TimeoutError, TimeoutError):
            return 503, {"detail": f"partition {partition} did not catch up within {wait:g} s"}
        entries, next_before = store.page(user_id, limit, before)
        return 200, {
            "user_id": user_id,
            "partition": partition,
            "requests": [msgspec.structs.asdict(e) for e in entries],
            "next_before": next_before,
        }
