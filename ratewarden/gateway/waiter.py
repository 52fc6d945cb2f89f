"""Matching decisions to the HTTP requests waiting for them: this gateway's reply partition.

Every request the gateway publishes is stamped with the replies topic and one partition of it
(``schemas.replies``); the limiter writes the decision there too. One consumer, outside any
consumer group, reads only that partition, from the end it found at start-up (resolved before the
first request is published, so no reply can slip past). A reply record holds the answers of one
limiter batch (``schemas.replies``); each answer lands with the caller waiting for its
``request_id``; answers nobody waits for (answers that came too late, or another gateway's, when two
share a partition) are counted as dropped. A gateway's cost therefore follows its own traffic,
not the whole decisions stream.
"""

import logging
import os
from collections.abc import Callable

import msgspec
from aiokafka import TopicPartition

from ratewarden.gateway.waiting import Waiting
from schemas.decisions import Decision
from schemas.descriptors import DescriptorAnswer
from schemas.replies import RLS_REPLY, reply_headers
from streams.kafka_io import make_consumer
from streams.settings import Settings

__all__ = ["DecisionWaiter", "choose_reply_partition"]

logger = logging.getLogger(__name__)

#: A rate limit service answer's headers as aiokafka hands them over (a tuple of pairs).
RLS_REPLY_HEADERS = tuple(RLS_REPLY)


def choose_reply_partition(configured: int | None, partitions: int, pid: int | None = None) -> int:
    """The configured partition, else one from the process id (sibling processes get neighbouring ones).

    Two gateways on one partition still get every answer right: each reads the other's replies too.
    """
    if configured is not None:
        if configured >= partitions:
            raise ValueError(f"RATEWARDEN_GATEWAY_REPLY_PARTITION={configured}: the replies topic has "
                             f"{partitions} partitions (0..{partitions - 1})")
        return configured
    return (os.getpid() if pid is None else pid) % partitions


class DecisionWaiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = None
        self.partition: int | None = None
        self.stamp: list[tuple[str, bytes]] = []  # the reply headers of every request this gateway publishes
        self.pending: dict[str, tuple[Waiting, int]] = {}
        #: Called with the number of decisions in every reply read (the outbox counts its flights with
        #: it); ``on_answer`` for rate limit service answers (their own outbox).
        self.on_reply: Callable[[int], None] = lambda count: None
        self.on_answer: Callable[[int], None] = lambda count: None
        self.stats = {"matched": 0, "dropped": 0, "bad": 0}
        self._decode = msgspec.json.Decoder(list[Decision]).decode
        self._decode_answer = msgspec.json.Decoder(list[DescriptorAnswer]).decode

    async def start(self, partitions: int) -> None:
        """Read this gateway's partition of the replies topic (``partitions``: its partition count)."""
        topic = self.settings.replies_topic
        self.partition = choose_reply_partition(self.settings.gateway_reply_partition, partitions)
        self.stamp = reply_headers(topic, self.partition)
        # The broker answers a held fetch as soon as a reply arrives (fetch.min.bytes 1): the wait only
        # bounds how often an idle gateway asks. 500 ms instead of 5: the same latency at 1 and 32
        # connections here (alternating runs), and an idle gateway no longer polls 200 times a second.
        self.consumer = make_consumer(self.settings, group_id=None, max_poll_records=10_000, fetch_max_wait_ms=500)
        await self.consumer.start()
        tp = TopicPartition(topic, self.partition)
        self.consumer.assign([tp])
        await self.consumer.seek_to_end(tp)
        await self.consumer.position(tp)  # resolve "the end" now, before any request is published
        logger.info("waiting for decisions on %s[%d]", topic, self.partition)

    def expect(self, request_id: str, waiting: Waiting, index: int) -> None:
        """The decision of ``request_id`` is request ``index`` of ``waiting``."""
        self.pending[request_id] = (waiting, index)

    def forget(self, request_id: str) -> None:
        self.pending.pop(request_id, None)

    def resolve(self, value: bytes, rls: bool = False) -> None:
        """Land one reply record: ``Decision`` objects, or with ``rls`` ``DescriptorAnswer`` ones (``schemas.replies``)."""
        try:
            answers = self._decode_answer(value) if rls else self._decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
            self.stats["bad"] += 1
            if self.stats["bad"] % 1_000 == 1:  # the first, then every 1,000th: junk cannot flood the log
                logger.warning("an undecodable reply on %s[%s] (%d so far)", self.settings.replies_topic,
                               self.partition, self.stats["bad"])
            return
        (self.on_answer if rls else self.on_reply)(len(answers))
        pending, matched = self.pending, 0
        for answer in answers:
            entry = pending.pop(answer.request_id, None)
            if entry is not None:
                entry[0].land(entry[1], answer)
                matched += 1
        self.stats["matched"] += matched
        self.stats["dropped"] += len(answers) - matched

    async def run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    self.resolve(record.value, record.headers == RLS_REPLY_HEADERS)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
