"""Per-user request history of one decisions partition, kept in RocksDB (the worker side of the history).

The history is a pure function of the ``decisions`` topic. Every decision of partition ``p`` is one
RocksDB entry, key ``user_id NUL ts request_id`` (``ts`` as a big-endian double: keys sort by user,
then event time), value ``(request_type, ip, verdict, reason)``; writing one costs a put, no read
(but one seek per user, for its newest entry, the first time it is written after opening).
A decision delivered twice (at least once) writes the same key again. Reads walk a user's keys from
the newest and stop at ``history_max_count`` entries or ``history_max_age`` seconds before the
partition's watermark (the highest event time seen), so the bounds hold exactly for readers; on disk
a user is trimmed to them whenever ``history_max_count`` entries were added since its last trim, and
every user by :meth:`HistoryStore.sweep`, which the history service runs whenever the partition's event
time has moved on by a quarter of ``history_max_age`` (:meth:`HistoryStore.sweep_due`). Without
that, users who stop before reaching ``history_max_count`` new entries (most of them) were never
trimmed until a wall-clock sweep, and the directory grew with every request (docs/benchmarks.md,
"History state on disk"). RocksDB's own info log is capped too (:func:`history_options`).

The store also records ``position``, the next decisions offset not yet applied, in the same write
batch as the entries. So a local copy is always a prefix of the log: whichever worker owns the
partition next resumes from that position (or, without a local copy, from the first record younger
than the retention), and gets the same history.
"""

import logging
import shutil
import struct
from pathlib import Path
from typing import Iterable, Iterator

import msgspec
from rocksdict import Rdict, ReadOptions, WriteBatch

from streams.kafka_io import partition_for  # noqa: F401 - re-exported: history routing uses it
from streams.rocks_state import rocks_options

__all__ = ["Decided", "HistoryEntry", "HistoryStore", "history_options", "partition_for"]

logger = logging.getLogger(__name__)

#: Meta keys start with NUL, which never occurs in a user id (ids are printable and non-empty).
_POSITION_KEY = b"\x00position"
_WATERMARK_KEY = b"\x00watermark"
_OFFSET = struct.Struct("<q")
_FLOAT = struct.Struct("<d")
_TS = struct.Struct(">d")  # order-preserving for the non-negative event times the intake admits
_NEWEST = b"\xff" * 9  # after every ts and request id of a user's prefix
#: A user's trim cycle (:meth:`HistoryStore.apply`): entries added since its last trim, the oldest of
#: them, the newest key known, whether each was newer than every entry before it.
_COUNT, _OLDEST_ADDED, _NEWEST_KEY, _IN_ORDER = range(4)


class Decided(msgspec.Struct):
    """The fields of a ``Decision`` the history keeps (decoding only these is cheaper)."""

    request_id: str
    user_id: str
    ip: str
    request_type: str
    verdict: str
    reason: str
    ts_event: float


class HistoryEntry(msgspec.Struct, frozen=True):
    """One decided request, as the history answers it."""

    ts: float
    request_id: str
    request_type: str
    ip: str
    verdict: str
    reason: str


def history_options():
    """The state options plus a capped RocksDB info log (``LOG``: ~0.8 MiB per million entries, unbounded
    by default): at most two files of 1 MiB."""
    options = rocks_options()
    options.set_max_log_file_size(1024 * 1024)
    options.set_keep_log_file_num(2)
    return options


def _prefix(user_id: str) -> bytes:
    return user_id.encode() + b"\x00"


class HistoryStore:
    """The history of one decisions partition in RocksDB (see the module docstring for the layout)."""

    def __init__(self, path: Path, max_count: int, max_age: float) -> None:
        self.path, self.max_count, self.max_age = path, max_count, max_age
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), options=history_options())
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(tuple[str, str, str, str]).decode
        self._added: dict[str, list] = {}  # per user: its trim cycle (see _COUNT)
        raw = self._db.get(_POSITION_KEY)
        self.position: int | None = None if raw is None else _OFFSET.unpack(raw)[0]
        raw = self._db.get(_WATERMARK_KEY)
        self.watermark = 0.0 if raw is None else _FLOAT.unpack(raw)[0]
        self.swept_at = self.watermark  # event time of the last sweep

    def sweep_due(self) -> bool:
        """Event time has moved a quarter of ``max_age`` past the last sweep: entries that much older
        are out of bounds on disk (so the directory holds at most 1.25 x the retention)."""
        return self.watermark - self.swept_at >= self.max_age / 4

    def apply(self, decisions: Iterable[Decided], position: int) -> int:
        """Write decisions (``Decided`` or ``Decision``) and the position in one write batch; how many.

        A user who reached ``max_count`` entries since the last trim is trimmed: in the same batch when
        every one of them was newer than the user's newest entry before (the common case: the oldest of
        them is then the oldest to keep), else by a walk over the user's newest entries (:meth:`_trim`).
        """
        batch = WriteBatch(raw_mode=True)
        encode, pack, put, watermark = self._encode, _TS.pack, batch.put, self.watermark
        cycles, max_count = self._added, self.max_count
        walk: list[str] = []
        n = 0
        for d in decisions:
            n += 1
            user, ts = d.user_id, d.ts_event
            prefix = (user + "\x00").encode()
            key = prefix + pack(ts) + d.request_id.encode()
            put(key, encode((d.request_type, d.ip, d.verdict, d.reason)))
            cycle = cycles.get(user)
            if cycle is None:  # first seen since the store opened (or swept): its newest entry on disk
                newest = self._newest_on_disk(prefix)
                cycle = cycles[user] = [0, key, key, newest is None or key > newest]
            elif key > cycle[_NEWEST_KEY]:
                cycle[_NEWEST_KEY] = key
            else:
                cycle[_IN_ORDER] = False
            count = cycle[_COUNT] = cycle[_COUNT] + 1
            if count == 1:
                cycle[_OLDEST_ADDED] = key
            if count == max_count:
                if cycle[_IN_ORDER]:
                    batch.delete_range(prefix, cycle[_OLDEST_ADDED])
                    cycle[_COUNT] = 0
                else:
                    walk.append(user)
            if ts > watermark:
                watermark = ts
        batch.put(_POSITION_KEY, _OFFSET.pack(position))
        batch.put(_WATERMARK_KEY, _FLOAT.pack(watermark))
        self._db.write(batch)
        self.position, self.watermark = position, watermark
        for user_id in walk:
            self._trim(user_id)
        return n

    def _newest_on_disk(self, prefix: bytes) -> bytes | None:
        it = self._db.iter()
        it.seek_for_prev(prefix + _NEWEST)
        return it.key() if it.valid() and it.key().startswith(prefix) else None

    def _newest(self, prefix: bytes) -> Iterator[tuple[float, bytes]]:
        """``(ts, key)`` of a user's entries within the bounds, newest first."""
        horizon, start = self.watermark - self.max_age, len(prefix)
        it = self._db.iter()
        it.seek_for_prev(prefix + _NEWEST)
        for _ in range(self.max_count):
            if not it.valid() or not (key := it.key()).startswith(prefix):
                return
            ts = _TS.unpack_from(key, start)[0]
            if ts < horizon:
                return
            yield ts, key
            it.prev()

    def _trim(self, user_id: str) -> None:
        """Delete a user's entries beyond the bounds (walking its newest ``max_count``)."""
        prefix = _prefix(user_id)
        newest = oldest = None
        for _, oldest in self._newest(prefix):
            newest = newest or oldest
        if oldest is None:
            self._db.delete_range(prefix, prefix + _NEWEST)
            self._added.pop(user_id, None)
        else:
            self._db.delete_range(prefix, oldest)
            self._added[user_id] = [0, None, newest, True]  # the next trim can be decided while writing

    def skip_to(self, position: int) -> None:
        """Move the position without entries (records before it are out of retention)."""
        self._db.put(_POSITION_KEY, _OFFSET.pack(position))
        self.position = position

    def page(self, user_id: str, limit: int, before: float | None = None) -> tuple[list[HistoryEntry], float | None]:
        """Up to ``limit`` entries older than ``before``, newest first, and the ``before`` of the next page.

        ``before`` is an event time, so a page never splits requests of one time: it ends above them
        (or, when more than ``limit`` requests share one time, holds them all).
        """
        prefix = _prefix(user_id)
        rows: list[tuple[float, bytes]] = []
        more = False
        for ts, key in self._newest(prefix):
            if before is not None and ts >= before:
                continue
            if len(rows) >= limit and ts != rows[-1][0]:
                more = True
                break
            rows.append((ts, key))
        if len(rows) > limit:  # the page ended inside a group of equal times
            tied = next(i for i, row in enumerate(rows) if row[0] == rows[-1][0])
            if tied:
                rows, more = rows[:tied], True
        start, decode, get = len(prefix) + 8, self._decode, self._db.get
        entries = [HistoryEntry(ts, key[start:].decode(), *decode(get(key))) for ts, key in rows]
        return entries, (rows[-1][0] if more else None)

    def sweep(self) -> int:
        """Trim every user to the bounds (also users no longer active); the entries deleted."""
        horizon = self.watermark - self.max_age
        batch = WriteBatch(raw_mode=True)
        deleted, user, kept = 0, None, 0
        scan = ReadOptions()
        scan.fill_cache(False)  # a full scan would fill RocksDB's block cache (32 MiB per store, in RSS)
        it = self._db.iter(scan)
        it.seek_to_last()
        while it.valid() and not (key := it.key()).startswith(b"\x00"):
            prefix = key[: key.index(b"\x00") + 1]
            if prefix != user:
                user, kept = prefix, 0
            if kept >= self.max_count or _TS.unpack_from(key, len(prefix))[0] < horizon:
                batch.delete(key)
                deleted += 1
            else:
                kept += 1
            it.prev()
        if deleted:
            self._db.write(batch)
        self._added.clear()
        self.swept_at = self.watermark
        return deleted

    def wipe(self) -> None:
        """Forget the local copy (the topic was recreated): rebuild from the log."""
        self._db.close()
        Rdict.destroy(str(self.path), history_options())
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = Rdict(str(self.path), options=history_options())
        self.position, self.watermark = None, 0.0
        self.swept_at = 0.0
        self._added.clear()

    def close(self) -> None:
        self._db.close()
