"""Restoring a partition's store from its changelog partition.

The changelog of input partition ``p`` is partition ``p`` of ``<app_id>-windows-changelog``
(compacted). A flush writes each changed key once, then a *position marker* (key
``\\x00position``, value: the next input offset not reflected in the values; see
:class:`streams.state.FlushTransaction`). Restore applies records only when a marker closes them, so
a flush cut short by a crash never leaves values ahead of their position; its unconfirmed tail is
closed by an *abort marker* that the next owner writes, so a later restore skips it too.
"""

import logging
from typing import Awaitable, Callable

from aiokafka import TopicPartition

from streams.metrics import RESTORED
from streams.state import POSITION_KEY, Changes, PartitionStore, decode_position

__all__ = ["ABORT_KEY", "WriteMarker", "restore"]

logger = logging.getLogger(__name__)

ABORT_KEY = b"\x00abort"

#: Writes one record (topic, partition, key, value) ahead of anything the partition produces next.
WriteMarker = Callable[[str, int, bytes, bytes], Awaitable[None]]


async def restore(store: PartitionStore, consumer, topic: str, write_marker: WriteMarker) -> int:
    """Bring ``store`` up to the end of its changelog partition; return the records read.

    ``consumer`` is a group-less, read_committed consumer used for nothing else meanwhile (it is
    re-assigned here). Reading starts at ``store.changelog_next``; a local copy that claims more than
    the changelog holds (the topic was recreated) is wiped and restored from offset 0.
    """
    tp = TopicPartition(topic, store.partition)
    end = (await consumer.end_offsets([tp]))[tp]
    if store.changelog_next > end:
        logger.warning("partition %d: local state is ahead of changelog %s (recreated?): wiping", store.partition, tp)
        store.wipe()
    if store.changelog_next >= end:
        return 0
    consumer.assign([tp])
    consumer.seek(tp, store.changelog_next)
    pending: Changes = {}
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
        if not batch:  # only control records or compacted gaps were left: ask where the consumer is
            position = await consumer.position(tp)
    RESTORED.inc(read)
    if pending:
        logger.warning("partition %d: dropping %d unconfirmed changelog records", store.partition, len(pending))
        await write_marker(topic, store.partition, ABORT_KEY, b"")
    logger.info("partition %d: restored %d changelog records, position %s", store.partition, read, store.position)
    return read
