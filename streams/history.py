"""Per-user request history of one decisions partition, kept in RocksDB (the worker side of the history).

The history is a pure function of the ``decisions`` topic. Each :meth:`HistoryStore.apply` writes one
value per user it touches, a *run*: the user's decisions of that call, a msgpack list of ``(ts,
request_id, request_type, ip, verdict, reason)`` (and ``status`` last, for a decision that has one: runs
written before statuses existed read as they are) sorted by ``(ts, request_id)``, under the key of its
newest entry, ``user_id NUL ts request_id`` (``ts`` a big-endian double: keys sort by user, then event
time). A run whose key exists (a decision delivered twice, at least once: never above the watermark,
the highest event time seen) is merged into it. Runs may overlap in time (late events) but no entry is
above its run's key, so a read walks the user's runs from the newest key, stops at a key older than
``history_max_age`` seconds before the watermark or than the ``history_max_count``-th newest entry read,
and counts a decision found in two runs once: the bounds hold exactly for readers. On disk a user is
trimmed once ``history_max_count`` entries were added since its last trim: if its runs since hold that
many newer than all before, by deleting the runs up to its newest entry at that trim (in the write
batch, no read); else, once a quarter more were added, by such a walk. Every user is
trimmed by :meth:`HistoryStore.sweep` whenever event time has moved a quarter of ``history_max_age``
past the last (:meth:`HistoryStore.sweep_due`), so users who stop before ``history_max_count`` new
entries do not grow the directory (docs/benchmarks.md, "History state on disk"). RocksDB's info log is
capped too (:func:`history_options`). A copy in the former layout (a key per decision, no ``format``
key) is wiped on open, to be rebuilt from the topic.

The store also records ``position``, the next decisions offset not yet applied, in the same write
batch as the entries. So a local copy is always a prefix of the log: whichever worker owns the
partition next resumes from that position (or, without a local copy, from the first record younger
than the retention), and gets the same history.
"""

import heapq
import logging
import shutil
from pathlib import Path
from typing import Iterable

import msgspec
from rocksdict import Rdict, RdictIter, ReadOptions, WriteBatch

from streams.history_layout import (  # noqa: F401 - Decided, HistoryEntry, history_options re-exported
    COUNT, FLOAT, FORMAT, FORMAT_KEY, FRESH, LATEST, NEWEST, OFFSET, POSITION_KEY, REQUEST_ID, START, TS, WATERMARK_KEY,
    Decided, Entry, HistoryEntry, history_options, key_prefix, unique_entries,
)
from streams.kafka_io import partition_for  # noqa: F401 - re-exported: history routing uses it

__all__ = ["Decided", "HistoryEntry", "HistoryStore", "history_options", "partition_for"]

logger = logging.getLogger(__name__)

class HistoryStore:
    """The history of one decisions partition in RocksDB (see the module docstring for the layout)."""

    def __init__(self, path: Path, max_count: int, max_age: float) -> None:
        self.path, self.max_count, self.max_age = path, max_count, max_age
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), options=history_options())
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(list[tuple]).decode
        self._added: dict[str, list] = {}  # per user: its trim cycle (see COUNT)
        raw = self._db.get(POSITION_KEY)
        self.position: int | None = None if raw is None else OFFSET.unpack(raw)[0]
        raw = self._db.get(WATERMARK_KEY)
        self.watermark = 0.0 if raw is None else FLOAT.unpack(raw)[0]
        self.swept_at = self.watermark  # event time of the last sweep
        if self._db.get(FORMAT_KEY) is None:  # new, or in the former layout
            if self.position is not None:
                logger.info("history %s: the local copy is in the old layout (a key per decision), "
                            "rebuilding it from the decisions topic", path)
            self.wipe()

    def sweep_due(self) -> bool:
        """Event time has moved a quarter of ``max_age`` past the last sweep: entries that much older
        are out of bounds on disk (so the directory holds at most 1.25 x the retention)."""
        return self.watermark - self.swept_at >= self.max_age / 4

    def apply(self, decisions: Iterable[Decided], position: int) -> int:
        """Write decisions (``Decided`` or ``Decision``), a run per user, and the position in one write
        batch; how many. Trims the users due (see the module docstring)."""
        groups: dict[str, list] = {}
        get = groups.get
        for d in decisions:  # once per decision: the entry is built while grouping
            if (status := d.status) is None:
                entry = (d.ts_event, d.request_id, d.request_type, d.ip, d.verdict, d.reason)
            else:
                entry = (d.ts_event, d.request_id, d.request_type, d.ip, d.verdict, d.reason, status)
            if (run := get(user := d.user_id)) is None:
                groups[user] = [entry]
            else:
                run.append(entry)
        batch = WriteBatch(raw_mode=True)
        pack, put, encode, cycles, max_count, walk = TS.pack, batch.put, self._encode, self._added, self.max_count, []
        known = watermark = self.watermark
        n = 0
        for user, run in groups.items():
            n += (added := len(run))
            if added > 1:
                run.sort()  # linear when already in order (the common case)
                if len(set(map(REQUEST_ID, run))) < added:  # a decision twice in one call
                    run = unique_entries(run)
                    added = len(run)
            ts = run[-1][0]
            prefix = key_prefix(user)
            key = prefix + pack(ts) + run[-1][1].encode()
            if ts <= known and (old := self._db.get(key)) is not None:  # (a key above the watermark is new)
                run = unique_entries(sorted(self._decode(old) + run))
            put(key, encode(run[-max_count:] if len(run) > max_count else run))  # older: never read
            if ts > watermark:
                watermark = ts
            if (cycle := cycles.get(user)) is None:  # first seen since opened (or swept): look it up
                cycle = cycles[user] = [0, 0, newest := self._newest(prefix), newest]
            oldest = key if len(run) == 1 else prefix + pack(run[0][0]) + run[0][1].encode()
            if oldest > cycle[LATEST]:  # newer than all before: distinct from them
                cycle[FRESH] += added
                cycle[LATEST] = key
            elif key > cycle[LATEST]:
                cycle[LATEST] = key
            cycle[COUNT] += added
            if cycle[FRESH] >= max_count:  # max_count entries above all keys up to its last trim's newest
                if cycle[START]:  # so those runs are out of bounds
                    batch.delete_range(prefix, cycle[START])
                    batch.delete(cycle[START])
                cycles[user] = [0, 0, cycle[LATEST], cycle[LATEST]]
            elif cycle[COUNT] >= max_count + max_count // 4:
                walk.append(user)
        put(POSITION_KEY, OFFSET.pack(position))
        put(WATERMARK_KEY, FLOAT.pack(watermark))
        self._db.write(batch)
        self.position, self.watermark = position, watermark
        if walk:
            batch = WriteBatch(raw_mode=True)
            for user in walk:
                prefix = key_prefix(user)
                rows = self._cut(batch, self._at_newest(prefix), prefix)[0]
                newest = prefix + pack(rows[0][0]) + rows[0][1].encode() if rows else b""
                cycles[user] = [0, 0, newest, newest]
            self._db.write(batch)
        return n

    def _newest(self, prefix: bytes) -> bytes:
        """The key of the user's newest run on disk (of its newest entry), or ``b""``."""
        it = self._at_newest(prefix)
        return it.key() if it.valid() and it.key().startswith(prefix) else b""

    def _at_newest(self, prefix: bytes) -> RdictIter:
        """An iterator on the user's newest run (or, if it has none, on whatever sorts before it)."""
        it = self._db.iter()
        it.seek_for_prev(prefix + NEWEST)
        return it

    def _walk(self, it: RdictIter, prefix: bytes) -> tuple[list[Entry], list[tuple[bytes, list[Entry]]]]:
        """A user's entries within the bounds, newest first, and the runs read ``(key, entries)``, from
        the run ``it`` is on (the user's newest) backwards; leaves ``it`` on the first run not read."""
        horizon, start, max_count, decode = self.watermark - self.max_age, len(prefix), self.max_count, self._decode
        found: dict[tuple[float, str], Entry] = {}
        runs: list[tuple[bytes, list[Entry]]] = []
        cutoff, counted = None, 0
        while it.valid() and (key := it.key()).startswith(prefix):
            ts = TS.unpack_from(key, start)[0]
            if ts < horizon:
                break  # every entry here and in older runs is older than the horizon
            if len(found) >= max_count:
                if counted != len(found):
                    cutoff, counted = heapq.nlargest(max_count, found)[-1], len(found)
                if (ts, key[start + 8 :].decode()) <= cutoff:
                    break  # nothing here or older is among the newest max_count
            runs.append((key, entries := decode(it.value())))
            for e in entries:
                if e[0] >= horizon:
                    found.setdefault(e[:2], e)
            it.prev()
        return sorted(found.values(), reverse=True)[:max_count], runs

    def _cut(self, batch: WriteBatch, it: RdictIter, prefix: bytes, count: bool = False) -> tuple[list[Entry], int]:
        """Trim (into ``batch``) the user whose newest run ``it`` is on to the bounds: the entries kept,
        newest first, and those deleted (counting the runs older than all read only if ``count``). A run
        keeping any entry keeps its newest, so its key."""
        rows, runs = self._walk(it, prefix)
        cutoff, deleted = rows[-1][:2] if rows else None, 0
        for key, entries in runs:  # each sorted, without repeats (as every run written)
            if rows and entries[0][:2] >= cutoff:
                continue
            kept = [e for e in entries if e[:2] >= cutoff] if rows else []
            if kept:
                batch.put(key, self._encode(kept))
            else:
                batch.delete(key)
            deleted += len(entries) - len(kept)
        if not count and it.valid() and (key := it.key()).startswith(prefix):  # all older: out of bounds
            batch.delete_range(prefix, key)
            batch.delete(key)
        while count and it.valid() and (key := it.key()).startswith(prefix):
            batch.delete(key)
            deleted += len(self._decode(it.value()))
            it.prev()
        return rows, deleted

    def skip_to(self, position: int) -> None:
        """Move the position without entries (records before it are out of retention)."""
        self._db.put(POSITION_KEY, OFFSET.pack(position))
        self.position = position

    def page(self, user_id: str, limit: int, before: float | None = None) -> tuple[list[HistoryEntry], float | None]:
        """Up to ``limit`` entries older than ``before``, newest first, and the ``before`` of the next page.

        ``before`` is an event time, so a page never splits requests of one time: it ends above them
        (or, when more than ``limit`` requests share one time, holds them all).
        """
        prefix = key_prefix(user_id)
        it = self._at_newest(prefix)
        rows: list[Entry] = []
        more = False
        for entry in self._walk(it, prefix)[0]:
            ts = entry[0]
            if before is not None and ts >= before:
                continue
            if len(rows) >= limit and ts != rows[-1][0]:
                more = True
                break
            rows.append(entry)
        if len(rows) > limit:  # the page ended inside a group of equal times
            tied = next(i for i, row in enumerate(rows) if row[0] == rows[-1][0])
            if tied:
                rows, more = rows[:tied], True
        return [HistoryEntry(*row) for row in rows], (rows[-1][0] if more else None)

    def sweep(self) -> int:
        """Trim every user to the bounds (also users no longer active); the entries deleted."""
        batch = WriteBatch(raw_mode=True)
        deleted = 0
        scan = ReadOptions()
        scan.fill_cache(False)  # a full scan would fill RocksDB's block cache (32 MiB per store, in RSS)
        it = self._db.iter(scan)
        it.seek_to_last()
        while it.valid() and not (key := it.key()).startswith(b"\x00"):
            deleted += self._cut(batch, it, key[: key.index(b"\x00") + 1], count=True)[1]
        if deleted:
            self._db.write(batch)
        self._added.clear()
        self.swept_at = self.watermark
        return deleted

    def wipe(self) -> None:
        """Forget the local copy (the topic was recreated, or it is in the former layout): rebuild from the log."""
        self._db.close()
        Rdict.destroy(str(self.path), history_options())
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = Rdict(str(self.path), options=history_options())
        self._db.put(FORMAT_KEY, FORMAT)
        self.position, self.watermark = None, 0.0
        self.swept_at = 0.0
        self._added.clear()

    def close(self) -> None:
        self._db.close()
