"""Matching decisions to the HTTP requests waiting for them.

One consumer, outside any consumer group, reads every partition of ``decisions`` from the end it
found at start-up (resolved before the first request is published, so no decision can slip past).
Each decision resolves the future of its ``request_id`` if this gateway is waiting for it; all
others (other gateways' requests, duplicates, answers that came too late) are dropped. Only the
``request_id`` is decoded for those.
"""

import asyncio
import logging

import msgspec
from aiokafka import TopicPartition

from schemas.decisions import Decision
from streams.kafka_io import make_consumer
from streams.settings import Settings

__all__ = ["DecisionWaiter"]

logger = logging.getLogger(__name__)


class _RequestId(msgspec.Struct):
    request_id: str


class DecisionWaiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = None
        self.pending: dict[str, asyncio.Future] = {}
        self.stats = {"matched": 0, "dropped": 0, "bad": 0}
        self._peek = msgspec.json.Decoder(_RequestId).decode
        self._decode = msgspec.json.Decoder(Decision).decode

    async def start(self, partitions: int) -> None:
        self.consumer = make_consumer(self.settings, group_id=None, max_poll_records=10_000)
        await self.consumer.start()
        tps = [TopicPartition(self.settings.decisions_topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)  # resolve "the end" now, before any request is published

    def expect(self, request_id: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self.pending.pop(request_id, None)

    def resolve(self, value: bytes) -> None:
        try:
            future = self.pending.pop(self._peek(value).request_id, None)
            if future is None:
                self.stats["dropped"] += 1
            elif not future.done():
                future.set_result(self._decode(value))
                self.stats["matched"] += 1
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
            self.stats["bad"] += 1

    async def run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    self.resolve(record.value)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
