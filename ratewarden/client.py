"""The producer and consumer SDK (kafka-python): publish request events, subscribe to decisions.

    with RequestPublisher(settings) as publisher:
        publisher.publish(RequestEvent("r1", "u1", "203.0.113.7", "login", 1732900000.125))
    for decision in DecisionSubscriber(settings, users={"u1"}, from_end=False):
        print(decision.verdict)

Decisions are delivered at least once (a worker that crashes between flushes re-decides the events
since its last flush, with the same verdicts): de-duplicate by ``request_id`` if it matters.
"""

import logging
import time
from typing import Iterable, Iterator

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.decisions import Decision
from schemas.events import RequestEvent
from streams.kafka_config import kafka_python_options, resolve_bootstrap
from streams.settings import Settings, get_settings
from streams.topics import require_topics

__all__ = ["RequestPublisher", "DecisionSubscriber", "read_topic_records"]

logger = logging.getLogger(__name__)


class RequestPublisher:
    """Publishes request events keyed by ``user_id``, batched by the producer (linger, large batches).

    It checks first that the requests topic exists with the partitions the workers expect, and raises
    :class:`streams.topics.TopicsError` saying what to run if not: brokers should not auto-create
    topics, and one a producer's first send created would have the broker's default partition count.
    """

    def __init__(self, settings: Settings | None = None, linger_ms: int = 5) -> None:
        self.settings = settings or get_settings()
        self.topic = self.settings.requests_topic
        require_topics(self.settings, [self.topic])
        self._encode = msgspec.json.Encoder().encode
        self._producer = KafkaProducer(
            bootstrap_servers=resolve_bootstrap(self.settings),
            acks="all",
            linger_ms=linger_ms,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            **kafka_python_options(self.settings),
        )

    def publish(self, event: RequestEvent) -> None:
        self._producer.send(self.topic, key=event.user_id.encode(), value=self._encode(event))

    def publish_raw(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send bytes as they are (for tests and tools that forward foreign payloads), with record headers if given."""
        self._producer.send(self.topic, key=key, value=value, headers=headers)

    def publish_many(self, events: Iterable[RequestEvent]) -> int:
        n = 0
        for event in events:
            self.publish(event)
            n += 1
        return n

    def flush(self, timeout: float | None = 60.0) -> None:
        self._producer.flush(timeout=timeout)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> "RequestPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DecisionSubscriber:
    """Iterates decisions from every partition, optionally only for ``users``.

    ``from_end=True`` (default) starts at the current end, i.e. sees only decisions made after it
    was created; ``False`` reads the topic from the beginning. Iteration stops after ``idle``
    seconds without a message (``None``: never). With workers in ``exactly_once`` mode, pass
    ``isolation_level="read_committed"`` to see each decision exactly once (after its transaction
    commits, i.e. up to one flush interval later).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        users: Iterable[str] | None = None,
        from_end: bool = True,
        idle: float | None = None,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        self.settings = settings or get_settings()
        self.users = set(users) if users is not None else None
        self.idle = idle
        self._decode = msgspec.json.Decoder(Decision).decode
        self._consumer = KafkaConsumer(
            bootstrap_servers=resolve_bootstrap(self.settings),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_poll_records=10_000,
            isolation_level=isolation_level,
            **kafka_python_options(self.settings),
        )
        topic = self.settings.decisions_topic
        partitions = self._consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        if from_end:
            for tp, offset in self._consumer.end_offsets(tps).items():
                self._consumer.seek(tp, offset)
        else:
            self._consumer.seek_to_beginning(*tps)

    def poll(self, timeout: float = 0.2) -> list[Decision]:
        """The decisions that arrived within ``timeout`` seconds (possibly none)."""
        out = []
        for records in self._consumer.poll(timeout_ms=int(timeout * 1000)).values():
            for record in records:
                decision = self._decode(record.value)
                if self.users is None or decision.user_id in self.users:
                    out.append(decision)
        return out

    def __iter__(self) -> Iterator[Decision]:
        last = time.monotonic()
        while True:
            batch = self.poll()
            if batch:
                last = time.monotonic()
                yield from batch
            elif self.idle is not None and time.monotonic() - last > self.idle:
                return

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> "DecisionSubscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_topic_records(
    settings: Settings, topic: str, last: int | None = None, isolation_level: str = "read_uncommitted",
    deadline: float | None = None,
) -> list:
    """Every record of ``topic`` from the beginning (or the ``last`` of each partition) to its end now.
    ``deadline``: ``time.monotonic()`` by which the read must end; TimeoutError after it."""
    consumer = KafkaConsumer(
        bootstrap_servers=resolve_bootstrap(settings), group_id=None, enable_auto_commit=False,
        isolation_level=isolation_level, **kafka_python_options(settings),
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        if last is not None:
            starts = consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(starts[tp], ends[tp] - last))
        records: list = []
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not end in time")
            for batch in consumer.poll(timeout_ms=500, max_records=50_000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
