"""Window counters of one input partition: RocksDB (rocksdict) on disk, a dict in memory.

The store is the single owner of one partition's counters while the partition is assigned. Reads and
writes on the hot path touch only the dict; :meth:`PartitionStore.take_dirty` hands the touched keys
to the flush, which writes them once each to the changelog and then, in one RocksDB write batch, to
disk together with two positions:

* ``position``: the next input offset whose events are *not* in these counters;
* ``changelog_next``: the next changelog offset not yet applied to this disk copy.

So a restart with the disk intact replays only the changelog tail, and a lost disk replays it all.
"""

import logging
import shutil
import struct
from pathlib import Path
from typing import Any, Protocol

from rocksdict import Options, Rdict, WriteBatch

__all__ = ["rocks_options", "PartitionStore", "POSITION_KEY", "StateCodec", "encode_position", "decode_position"]

logger = logging.getLogger(__name__)

_OFFSET = struct.Struct("<q")
#: Keys that are not counters start with NUL, which never occurs in a user id (intake rejects it).
POSITION_KEY = b"\x00position"
_CHANGELOG_KEY = b"\x00changelog-next"


class StateCodec(Protocol):
    """How the values of a store are written (disk and changelog) and when they are no longer needed.

    The store does not know what it holds: the decision cores (``agents``) supply the codec.
    """

    def encode(self, value: Any) -> bytes: ...

    def decode(self, raw: bytes) -> Any: ...

    def expired(self, value: Any, watermark: float) -> bool: ...


def encode_position(offset: int) -> bytes:
    return _OFFSET.pack(offset)


def decode_position(raw: bytes) -> int:
    return _OFFSET.unpack(raw)[0]


def rocks_options() -> Options:
    """Small memtables and eager L0 compaction: the live data is small (active users only), and
    expired counters are deletes, so the tombstones must be compacted away for disk to stay flat."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(512 * 1024)
    options.set_max_write_buffer_number(2)
    options.set_level_zero_file_num_compaction_trigger(2)
    options.set_max_total_wal_size(4 * 1024 * 1024)
    return options


class PartitionStore:
    """Counters of one partition, loaded into memory from RocksDB when the partition is assigned."""

    def __init__(self, directory: Path, partition: int, codec: StateCodec) -> None:
        self.partition = partition
        self.codec = codec
        self.path = directory / f"partition-{partition}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(self.path), options=rocks_options())
        self.counters: dict[str, Any] = {}
        self.dirty: set[str] = set()
        self.position: int | None = None
        self.changelog_next = 0
        self.watermark = 0.0  # highest event time seen in this partition
        self._load()

    def _load(self) -> None:
        for key, value in self._db.items():
            if key == POSITION_KEY:
                self.position = decode_position(value)
            elif key == _CHANGELOG_KEY:
                self.changelog_next = decode_position(value)
            else:
                self.counters[key.decode()] = self.codec.decode(value)
        logger.info(
            "partition %d: %d counters on disk, position %s, changelog at %d",
            self.partition, len(self.counters), self.position, self.changelog_next,
        )

    def wipe(self) -> None:
        """Forget the disk copy (e.g. the changelog was recreated): restore from offset 0."""
        self._db.close()
        Rdict.destroy(str(self.path), rocks_options())
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = Rdict(str(self.path), options=rocks_options())
        self.counters.clear()
        self.dirty.clear()
        self.position = None
        self.changelog_next = 0

    def apply_changelog(self, records: dict[bytes, bytes | None], position: int, changelog_next: int) -> None:
        """Apply restored changelog records that a position marker closed: memory, then disk."""
        for key, value in records.items():
            if value is None:
                self.counters.pop(key.decode(), None)
            else:
                self.counters[key.decode()] = self.codec.decode(value)
        self.write_disk(records, position, changelog_next)

    def write_disk(self, records: dict[bytes, bytes | None], position: int, changelog_next: int) -> None:
        """Persist records and both positions in one RocksDB write batch."""
        batch = WriteBatch(raw_mode=True)
        for key, value in records.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.position = position
        self.changelog_next = changelog_next
        batch.put(POSITION_KEY, encode_position(position))
        batch.put(_CHANGELOG_KEY, encode_position(changelog_next))
        self._db.write(batch)

    def expire(self) -> None:
        """Drop the values the codec says are no longer needed at the watermark."""
        watermark, expired = self.watermark, self.codec.expired
        dead = [k for k, c in self.counters.items() if expired(c, watermark)]
        for key in dead:
            del self.counters[key]
        self.dirty.update(dead)

    def take_dirty(self) -> dict[bytes, bytes | None]:
        """The changed keys since the last flush, encoded (None for deleted), and clear the set."""
        counters, encode = self.counters, self.codec.encode
        out: dict[bytes, bytes | None] = {}
        for key in self.dirty:
            counter = counters.get(key)
            out[key.encode()] = None if counter is None else encode(counter)
        self.dirty.clear()
        return out

    def close(self) -> None:
        self._db.close()
