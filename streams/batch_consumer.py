"""One batch consumer: subscribe, rebalance hooks under the run loop's lock, fetch loop, commit, crash.

The limiter, the request history and the analytics stages each consume fetched batches, not single
messages (a per-event Faust agent caps near 12k events/s; docs/architecture.md). They share this
base: a consumer in the subclass's group subscribed to its topic, a rebalance listener whose hooks
(:meth:`BatchConsumer.assigned`, :meth:`BatchConsumer.revoked`) run holding :attr:`BatchConsumer.lock`
— the same lock the run loop holds while it handles a fetched batch, so a rebalance never sees a
batch half handled — offset commits that tolerate a rebalance in progress, and
:meth:`BatchConsumer.supervise`, which runs the loop as a task of a ``mode`` Service and crashes that
service (the worker stops and its supervisor restarts it) when the loop fails.
"""

import asyncio
import logging
from typing import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from streams.kafka_io import make_consumer
from streams.settings import Settings
from streams.stopping import bounded

__all__ = ["BatchConsumer", "Offsets", "committed"]

logger = logging.getLogger(__name__)

#: What to commit per partition: the next offset to read, or (that offset, metadata for the next owner).
Offsets = dict[int, int | tuple[int, str]]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: "BatchConsumer") -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        partitions = sorted(tp.partition for tp in revoked)
        async with self._owner.lock:
            await self._owner.revoked(partitions)

    async def on_partitions_assigned(self, assigned) -> None:
        partitions = sorted(tp.partition for tp in assigned)
        async with self._owner.lock:
            await self._owner.assigned(partitions)


class BatchConsumer:
    """Subclasses set :attr:`topic` and :attr:`group` and implement :meth:`handle` (and the hooks)."""

    topic: str
    group: str | None
    #: How long one fetch waits for records when there are none.
    fetch_timeout_ms = 100
    #: How long the broker holds a fetch for records to arrive (None: ``settings.fetch_max_wait_ms``,
    #: a few ms for the hot path). An idle consumer sends a fetch each time it runs out: a sparse
    #: topic whose latency does not matter waits longer, sparing the process and the broker.
    fetch_max_wait_ms: int | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Held while a fetched batch is handled and while a rebalance hook runs.
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        #: Set once :meth:`start` has connected.
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        #: Set when :meth:`wind_down` had to cancel the loop mid-batch: its state is then not one a
        #: final flush or commit may publish.
        self.abandoned = False

    def new_consumer(self) -> AIOKafkaConsumer:
        """read_committed: under exactly-once, records of aborted transactions never count."""
        wait = self.settings.fetch_max_wait_ms if self.fetch_max_wait_ms is None else self.fetch_max_wait_ms
        return make_consumer(self.settings, group_id=self.group, isolation_level="read_committed",
                             fetch_max_wait_ms=wait)

    async def start(self, subscribe: bool = True) -> None:
        """Connect and (unless told not to yet) subscribe; partitions then come through :meth:`assigned`."""
        self.consumer = self.new_consumer()
        await self.consumer.start()
        if subscribe:
            self.subscribe()
        self.ready.set()

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], listener=_Listener(self))

    async def assigned(self, partitions: list[int]) -> None:
        """Partitions newly assigned (called holding the lock): open their state, seek if needed."""

    async def revoked(self, partitions: list[int]) -> None:
        """Partitions taken away (called holding the lock): commit what they need, close their state."""

    async def handle(self, batches: dict[TopicPartition, list]) -> None:
        """One ``getmany`` result, possibly empty (called holding the lock, after every fetch)."""
        raise NotImplementedError

    async def run(self) -> None:
        """Fetch and handle batches until :meth:`stop`."""
        max_records = self.settings.fetch_max_records
        while not self._stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=self.fetch_timeout_ms, max_records=max_records)
            async with self.lock:
                await self.handle(batches)

    async def commit(self, offsets: Offsets) -> bool:
        """Commit ``offsets`` of :attr:`topic` in :attr:`group`; False when a rebalance is in the way
        (the next owner then starts from the previous commit)."""
        if not offsets or self.consumer is None:
            return True
        topic = self.topic
        try:
            await self.consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            logger.warning("%s: commit skipped: %s", self.group, exc)
            return False
        return True

    def stop(self) -> None:
        self._stopping.set()

    async def wind_down(self, task: asyncio.Future | None, timeout: float) -> None:
        """Stop the loop and give ``task`` (what :meth:`supervise` returned) ``timeout`` s to finish its batch.

        A loop still busy after that waits on Kafka (a commit looks for a coordinator for as long as the
        broker is gone) and holds :attr:`lock`, which :meth:`close` needs: it is cancelled, and
        :attr:`abandoned` tells :meth:`close` that the half-handled batch must not be flushed or committed.
        """
        self.stop()
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=timeout)
            if not task.done():
                logger.warning("stopping %s: its loop took over %g s to finish a batch; cancelled",
                               self.label, timeout)
                self.abandoned = True
                task.cancel()
                await bounded(self.label, "the cancelled loop", asyncio.wait([task]))

    @property
    def label(self) -> str:
        """Its group, or its topic when it reads without one (for log lines)."""
        return self.group or self.topic

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def close(self) -> None:
        """Stop the consumer (subclasses commit and close their state first)."""
        if self.consumer is not None:
            await bounded(self.label, "its consumer", self.consumer.stop())
            self.consumer = None

    def supervise(self, service, name: str, loop: Callable | None = None) -> asyncio.Future:
        """Run :meth:`run` (or ``loop``) as a task; if it fails, crash ``service`` (a ``mode`` Service),
        which stops the worker so that its supervisor restarts it."""
        task = asyncio.ensure_future((loop or self.run)())

        def done(task: asyncio.Future) -> None:
            if not task.cancelled() and task.exception() is not None:
                logger.error("%s crashed: %r", name, task.exception())
                asyncio.ensure_future(service.crash(task.exception()))

        task.add_done_callback(done)
        return task


async def committed(consumer: AIOKafkaConsumer, topic: str, partitions) -> dict[int, OffsetAndMetadata]:
    """The offset and metadata committed for each partition of ``topic`` in ``consumer``'s group (absent if none).

    aiokafka's public ``committed()`` returns the offset only; the coordinator call under it returns
    the metadata too (aiokafka is pinned exactly, see pyproject.toml).
    """
    tps = [TopicPartition(topic, p) for p in partitions]
    found = await consumer._coordinator.fetch_committed_offsets(tps)
    return {tp.partition: meta for tp, meta in found.items() if meta.offset >= 0}
