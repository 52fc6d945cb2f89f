"""Restoring a partition's counters from its changelog partition.

The changelog of input partition ``p`` is partition ``p`` of ``<app_id>-windows-changelog``
(compacted). A flush writes each touched counter once, then a *position marker* (key
``\\x00position``, value: the next input offset not reflected in the counters). Restore applies
records only when a marker closes them, so a flush cut short by a crash never leaves counters ahead
of their position; its unconfirmed tail is closed by an *abort marker* that the next owner writes.
"""

import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.metrics import RESTORED
from streams.state import POSITION_KEY, PartitionStore, decode_position

__all__ = ["ABORT_KEY", "restore"]

logger = logging.getLogger(__name__)

ABORT_KEY = b"\x00abort"


async def restore(
    store: PartitionStore, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, topic: str
) -> int:
    """Bring ``store`` up to the end of its changelog partition; return the records read."""
    tp = TopicPartition(topic, store.partition)
    end = (await consumer.end_offsets([tp]))[tp]
    if store.changelog_next > end:
        logger.warning("partition %d: local state is ahead of changelog %s (recreated?): wiping", store.partition, tp)
        store.wipe()
    if store.changelog_next >= end:
        return 0
    consumer.assign([tp])
    consumer.seek(tp, store.changelog_next)
    pending: dict[bytes, bytes | None] = {}
    read = 0
    position = store.changelog_next
    while position < end:
        batch = await consumer.getmany(tp, timeout_ms=1_000, max_records=50_000)
        for record in batch.get(tp, ()):
            read += 1
            position = record.offset + 1
            if record.key == POSITION_KEY:
                store.apply_changelog(pending, decode_position(record.value), position)
                pending = {}
            elif record.key == ABORT_KEY:
                pending = {}
            else:
                pending[record.key] = record.value
        if not batch:
            position = await consumer.position(tp)
    RESTORED.inc(read)
    if pending:
        logger.warning("partition %d: dropping %d unconfirmed changelog records", store.partition, len(pending))
        await (await producer.send(topic, key=ABORT_KEY, value=b"", partition=store.partition))
    logger.info("partition %d: restored %d changelog records, position %s", store.partition, read, store.position)
    return read
