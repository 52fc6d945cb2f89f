"""The RocksDB (rocksdict) implementation of :class:`streams.state.PartitionStore`.

One database per partition under ``<state_dir>/partition-<p>``; values live in memory while the
partition is assigned and the database is read once, on open. A flush's changes and both positions
go to disk in one write batch, so the local copy never holds values ahead of its position.
"""

import logging
import shutil
from pathlib import Path
from typing import Iterable

from rocksdict import Options, Rdict, WriteBatch

from streams.state import Changes, DictBackedStore, StateCodec

__all__ = ["RocksPartitionStore", "rocks_options"]

logger = logging.getLogger(__name__)


def rocks_options() -> Options:
    """Small memtables and eager L0 compaction: the live data is small (active users only), and
    expired values are deletes, so the tombstones must be compacted away for disk to stay flat."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(512 * 1024)
    options.set_max_write_buffer_number(2)
    options.set_level_zero_file_num_compaction_trigger(2)
    options.set_max_total_wal_size(4 * 1024 * 1024)
    return options


class RocksPartitionStore(DictBackedStore):
    """A partition's values in memory, loaded from and persisted to RocksDB."""

    def __init__(self, directory: Path, partition: int, codec: StateCodec) -> None:
        super().__init__(partition, codec)
        self.path = directory / f"partition-{partition}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db: Rdict | None = Rdict(str(self.path), options=rocks_options())
        self._load()

    def _read_local(self) -> Iterable[tuple[bytes, bytes]]:
        return self._db.items()

    def _write_local(self, changes: Changes, positions: dict[bytes, bytes]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, raw in changes.items():
            if raw is None:
                batch.delete(key)
            else:
                batch.put(key, raw)
        for key, raw in positions.items():
            batch.put(key, raw)
        self._db.write(batch)

    def _destroy_local(self) -> None:
        self._db.close()
        Rdict.destroy(str(self.path), rocks_options())
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = Rdict(str(self.path), options=rocks_options())
        logger.info("partition %d: local state wiped", self.partition)

    def close(self) -> None:
        """Close the database (a second close does nothing)."""
        if self._db is not None:
            self._db.close()
            self._db = None
