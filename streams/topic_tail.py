"""The last records of a topic, read by a short-lived consumer: for readers that show a topic's tail.

The gateway's reports and advice routes and the console read the newest records of a topic on
demand: no consumer group, nothing committed, ``read_committed``. The consumer is closed with a bound
(:data:`CLOSE_TIMEOUT`): a broker that has gone must not hold a request open, so a close that takes
longer goes on in the background and is logged, never raised over the read's own outcome (a
cancelled read still propagates).
"""

import asyncio

from aiokafka import TopicPartition

from streams.kafka_io import make_consumer, partition_for
from streams.settings import Settings
from streams.stopping import bounded

__all__ = ["CLOSE_TIMEOUT", "close_consumer", "tail_records"]

#: Seconds a reader's consumer may take to close; it goes on closing in the background after that.
CLOSE_TIMEOUT = 1.0
_closing: set[asyncio.Future] = set()


async def tail_records(settings: Settings, topic: str, depth: int, key: str | None = None) -> list[tuple[int, bytes]]:
    """``(offset, value)`` of the last ``depth`` records of each partition of ``topic`` (as of now), by offset;
    with ``key``, of the one partition records with that key go to. An unknown topic has none."""
    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                             isolation_level="read_committed")
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            return []
        first = TopicPartition(topic, 0)
        consumer.assign([first])  # the consumer's metadata covers assigned topics only
        await consumer.beginning_offsets([first])
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        if key is not None:
            tps = [TopicPartition(topic, partition_for(key, len(tps)))]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        pending = set()
        for tp in tps:
            first = max(starts[tp], ends[tp] - depth)
            if first < ends[tp]:
                consumer.seek(tp, first)
                pending.add(tp)
        values: list[tuple[int, bytes]] = []
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batches.items():
                values.extend((r.offset, r.value) for r in records if r.value is not None and r.offset < ends[tp])
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return sorted(values, key=lambda item: item[0])
    finally:
        await close_consumer(consumer)


async def close_consumer(consumer) -> None:
    """Stop ``consumer`` (also after a cancelled read), waiting at most :data:`CLOSE_TIMEOUT` seconds; the close
    goes on in the background after that (:func:`streams.stopping.bounded` logs it)."""
    closing = asyncio.ensure_future(consumer.stop())
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)
    closing.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: never "never retrieved"
    await bounded("a tail reader", "its consumer", asyncio.shield(closing), CLOSE_TIMEOUT)
