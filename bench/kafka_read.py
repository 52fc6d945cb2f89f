"""Reading topics back after a run: end offsets, and records with their CreateTime.

The benchmark reads decisions (and, for the latency run, requests) after the fact, so the process
that measures never competes with the worker while it is being measured.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import msgspec
from kafka import KafkaConsumer, TopicPartition

__all__ = ["Stamped", "TopicReader", "decode_id", "decode_verdict"]


class _Ids(msgspec.Struct):
    request_id: str


class _Verdict(msgspec.Struct):
    request_id: str
    verdict: str = "?"


_ids = msgspec.json.Decoder(_Ids).decode
_verdicts = msgspec.json.Decoder(_Verdict).decode


def decode_id(value: bytes) -> str:
    return _ids(value).request_id


def decode_verdict(value: bytes) -> tuple[str, str]:
    decoded = _verdicts(value)
    return decoded.request_id, decoded.verdict


class Stamped(NamedTuple):
    """One record read back: its value and its CreateTime in milliseconds."""

    value: bytes
    timestamp: int


class TopicReader:
    """An unassigned kafka-python consumer (no group) over every partition of one topic."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        # read_committed: under exactly-once only committed decisions count (no difference otherwise).
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                       isolation_level="read_committed",
                                       fetch_max_wait_ms=50, max_poll_records=20_000,
                                       max_partition_fetch_bytes=8 * 1024 * 1024)
        partitions = None
        deadline = time.monotonic() + 30.0
        while not partitions:
            partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {topic} not found")
                time.sleep(0.2)
        self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(self.partitions)

    def ends(self) -> dict[int, int]:
        return {tp.partition: offset for tp, offset in self._consumer.end_offsets(self.partitions).items()}

    def count(self, since: dict[int, int] | None = None) -> int:
        """Records in the topic after ``since`` (offsets per partition; default: the beginning)."""
        since = since or {}
        return sum(end - since.get(p, 0) for p, end in self.ends().items())

    def read(self, since: dict[int, int] | None = None, until: dict[int, int] | None = None,
             timeout: float = 120.0) -> list[Stamped]:
        """Every record from ``since`` (default: beginning) up to ``until`` (default: the current ends)."""
        since = since or {}
        until = until or self.ends()
        out: list[Stamped] = []
        remaining = set()
        for tp in self.partitions:
            start = since.get(tp.partition, 0)
            self._consumer.seek(tp, start)
            if until.get(tp.partition, 0) > start:
                remaining.add(tp.partition)
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {self.topic} timed out with partitions {sorted(remaining)} unread")
            for tp, records in self._consumer.poll(timeout_ms=200).items():
                stop = until.get(tp.partition, 0)
                for record in records:
                    if record.offset < stop:
                        out.append(Stamped(record.value, record.timestamp))
            for tp in self.partitions:  # the position, not the last record: transaction markers take offsets
                if tp.partition in remaining and self._consumer.position(tp) >= until.get(tp.partition, 0):
                    remaining.discard(tp.partition)
        return out

    def close(self) -> None:
        self._consumer.close()
