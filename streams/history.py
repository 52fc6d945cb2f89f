"""Per-user request history of one decisions partition, kept in RocksDB (the worker side of the history).

The history is a pure function of the ``decisions`` topic: every decision of partition ``p`` is
appended to its user's list, each list kept sorted by event time, cut to the newest
``history_max_count`` entries and to ``history_max_age`` seconds before the partition's watermark
(the highest event time seen). The store also records ``position``, the next decisions offset not
yet applied, in the same RocksDB write batch as the entries. So a local copy is always a prefix of
the log: whichever worker owns the partition next resumes from that position (or, without a local
copy, from the first record younger than the retention), and gets the same history.

Decisions are at least once: an entry whose ``request_id`` the user's list already holds is skipped.
"""

import bisect
import logging
import shutil
import struct
from pathlib import Path
from typing import Iterable

import msgspec
from kafka.partitioner import murmur2
from rocksdict import Options, Rdict, WriteBatch

from schemas.decisions import Decision

__all__ = ["HistoryEntry", "HistoryStore", "partition_for"]

logger = logging.getLogger(__name__)

#: Meta keys start with NUL, which never occurs in a user id (the intake rejects unprintable ids).
_POSITION_KEY = b"\x00position"
_WATERMARK_KEY = b"\x00watermark"
_OFFSET = struct.Struct("<q")
_FLOAT = struct.Struct("<d")


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's murmur2, as kafka-python and aiokafka do it) picks."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class HistoryEntry(msgspec.Struct, frozen=True, array_like=True):
    """One decided request, as the history keeps it."""

    ts: float
    request_id: str
    request_type: str
    ip: str
    verdict: str
    reason: str


def _ts(entry: HistoryEntry) -> float:
    return entry.ts


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return options


class HistoryStore:
    """The history of one decisions partition: ``user_id -> [HistoryEntry]`` (oldest first) in RocksDB."""

    def __init__(self, path: Path, max_count: int, max_age: float) -> None:
        self.path, self.max_count, self.max_age = path, max_count, max_age
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), options=_options())
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(list[HistoryEntry]).decode
        raw = self._db.get(_POSITION_KEY)
        self.position: int | None = None if raw is None else _OFFSET.unpack(raw)[0]
        raw = self._db.get(_WATERMARK_KEY)
        self.watermark = 0.0 if raw is None else _FLOAT.unpack(raw)[0]

    def _entries(self, user_id: str) -> list[HistoryEntry]:
        raw = self._db.get(user_id.encode())
        return [] if raw is None else self._decode(raw)

    def apply(self, decisions: Iterable[Decision], position: int) -> int:
        """Append decisions (in log order) and set the position, in one write batch; the entries added."""
        by_user: dict[str, list[HistoryEntry]] = {}
        watermark = self.watermark
        for d in decisions:
            by_user.setdefault(d.user_id, []).append(
                HistoryEntry(d.ts_event, d.request_id, d.request_type, d.ip, d.verdict, d.reason)
            )
            if d.ts_event > watermark:
                watermark = d.ts_event
        horizon = watermark - self.max_age
        batch = WriteBatch(raw_mode=True)
        added = 0
        for user_id, new in by_user.items():
            entries = self._entries(user_id)
            seen = {e.request_id for e in entries}
            for entry in new:
                if entry.request_id in seen:
                    continue
                seen.add(entry.request_id)
                added += 1
                if entries and entry.ts < entries[-1].ts:
                    bisect.insort_right(entries, entry, key=_ts)  # after equal times: log order
                else:
                    entries.append(entry)
            first = max(bisect.bisect_left(entries, horizon, key=_ts), len(entries) - self.max_count)
            if first < len(entries):
                batch.put(user_id.encode(), self._encode(entries[first:]))
            else:
                batch.delete(user_id.encode())
        batch.put(_POSITION_KEY, _OFFSET.pack(position))
        batch.put(_WATERMARK_KEY, _FLOAT.pack(watermark))
        self._db.write(batch)
        self.position, self.watermark = position, watermark
        return added

    def skip_to(self, position: int) -> None:
        """Move the position without entries (records before it are out of retention or undecodable)."""
        self._db.put(_POSITION_KEY, _OFFSET.pack(position))
        self.position = position

    def page(self, user_id: str, limit: int, before: float | None = None) -> tuple[list[HistoryEntry], float | None]:
        """Up to ``limit`` entries older than ``before``, newest first, and the ``before`` of the next page."""
        entries = self._entries(user_id)
        low = bisect.bisect_left(entries, self.watermark - self.max_age, key=_ts)
        high = len(entries) if before is None else bisect.bisect_left(entries, before, key=_ts)
        start = max(low, high - limit)
        return entries[start:high][::-1], (entries[start].ts if start > low else None)

    def sweep(self) -> int:
        """Delete users whose newest entry is older than the retention; the number deleted."""
        horizon = self.watermark - self.max_age
        stale = [key for key, raw in self._db.items() if not key.startswith(b"\x00") and self._decode(raw)[-1].ts < horizon]
        if stale:
            batch = WriteBatch(raw_mode=True)
            for key in stale:
                batch.delete(key)
            self._db.write(batch)
        return len(stale)

    def wipe(self) -> None:
        """Forget the local copy (the topic was recreated): rebuild from the log."""
        self._db.close()
        Rdict.destroy(str(self.path), _options())
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = Rdict(str(self.path), options=_options())
        self.position, self.watermark = None, 0.0

    def close(self) -> None:
        self._db.close()
