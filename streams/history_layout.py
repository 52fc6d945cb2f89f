"""The on-disk layout of a request history store (``streams.history``): keys, values and records.

A user's runs live under ``user_id NUL``; a run's key ends with its newest entry's ``ts`` (a
big-endian double, so keys sort by event time) and request id. Meta keys start with NUL, which no
user id has. Values are msgpack lists of entries. :class:`Decided` is what the store reads of a
decision, :class:`HistoryEntry` what it answers.
"""

import operator
import struct

import msgspec

from streams.rocks_state import rocks_options

__all__ = [
    "COUNT", "Decided", "Entry", "FLOAT", "FORMAT", "FORMAT_KEY", "FRESH", "HISTORY_WRITE_BUFFER", "HistoryEntry",
    "LATEST", "NEWEST", "OFFSET", "POSITION_KEY", "REQUEST_ID", "START", "TS", "WATERMARK_KEY", "history_options",
    "key_prefix", "unique_entries",
]

#: Meta keys start with NUL, which never occurs in a user id (ids are printable and non-empty).
POSITION_KEY = b"\x00position"
WATERMARK_KEY = b"\x00watermark"
FORMAT_KEY, FORMAT = b"\x00format", b"2"  # 2: runs (none: a key per decision)
OFFSET = struct.Struct("<q")
FLOAT = struct.Struct("<d")
TS = struct.Struct(">d")  # order-preserving for the non-negative event times the intake admits
NEWEST = b"\xff" * 9  # after every ts and request id of a user's prefix
#: An entry of a run: the fields of a HistoryEntry, ``(ts, request_id, request_type, ip, verdict, reason)``, plus
#: ``status`` when the decision had one (msgspec cannot type a tuple of either length: decoded untyped).
Entry = tuple
REQUEST_ID = operator.itemgetter(1)
#: A user's trim cycle (:meth:`HistoryStore.apply`): entries added since its last trim, those of them in
#: runs newer than all before (so distinct), the key of its newest entry at its last trim and now
#: (``b""``: none).
COUNT, FRESH, START, LATEST = range(4)


class Decided(msgspec.Struct):
    """The fields of a ``Decision`` the history keeps (decoding only these is cheaper)."""

    request_id: str
    user_id: str
    ip: str
    request_type: str
    verdict: str
    reason: str
    ts_event: float
    status: int | None = None


class HistoryEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """One decided request, as the history answers it (``status`` only when the request had one)."""

    ts: float
    request_id: str
    request_type: str
    ip: str
    verdict: str
    reason: str
    status: int | None = None


#: Memtable size of a history store. The limiter's state options keep 512 KiB (its live data is small);
#: the history is written a run per user per fed slice (~0.7 MiB per 10,000 decisions), so at 512 KiB
#: writes kept switching memtables and waiting for flushes and L0 compactions: a decision cost 0.63 us
#: to store, 0.27 us of it Python. At 4 MiB: 0.47 us (1.6 million decisions in 10,000-decision slices,
#: mean per decision). Memory: two memtables per assigned partition.
HISTORY_WRITE_BUFFER = 4 * 1024 * 1024


def history_options():
    """The state options with :data:`HISTORY_WRITE_BUFFER` memtables, plus a capped RocksDB info log
    (``LOG``: ~0.8 MiB per million entries, unbounded by default): at most two files of 1 MiB."""
    options = rocks_options()
    options.set_write_buffer_size(HISTORY_WRITE_BUFFER)
    options.set_max_log_file_size(1024 * 1024)
    options.set_keep_log_file_num(2)
    return options


def unique_entries(entries: list) -> list:
    """Sorted entries without repeated ``(ts, request_id)``."""
    return [e for i, e in enumerate(entries) if not i or e[:2] != entries[i - 1][:2]]


def key_prefix(user_id: str) -> bytes:
    """The start of every key of a user's runs."""
    return user_id.encode() + b"\x00"
