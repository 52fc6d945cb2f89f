"""The state contract of one input partition: what the hot path, the flush and restore may do to it.

A :class:`PartitionStore` is the single owner of one partition's values while the partition is
assigned. The hot path reads and writes memory only (:attr:`~PartitionStore.get`,
:attr:`~PartitionStore.set`, :meth:`~PartitionStore.delete`), and the store remembers which keys
changed. A flush is an explicit transaction:

1. :meth:`~PartitionStore.take_changes` takes the changed keys, encoded (None for a deleted key), as
   a :class:`FlushTransaction` with the input position they reflect;
2. the caller writes :meth:`FlushTransaction.changelog_records` to the changelog and waits until
   they are delivered;
3. :meth:`~PartitionStore.persist` writes the same changes to the local copy in one atomic write,
   together with two positions:

* ``position``: the next input offset whose events are *not* in these values;
* ``changelog_next``: the next changelog offset not yet applied to this local copy.

So a restart with the local copy intact replays only the changelog tail, and a lost copy replays it
all (:func:`streams.changelog.restore`, through :meth:`~PartitionStore.apply_changelog`).

The store holds opaque values: a :class:`StateCodec` from the layer above encodes them and says when
one has expired. Two implementations pass one test suite: :class:`MemoryPartitionStore` here (its
"disk" is a dict the caller may keep, to play a restart) and ``streams.rocks_state``'s RocksDB one.
"""

import logging
import struct
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, MutableMapping, Protocol

__all__ = [
    "POSITION_KEY", "Changes", "DictBackedStore", "FlushTransaction", "MemoryPartitionStore", "PartitionStore", "StateCodec",
    "decode_position", "encode_position",
]

logger = logging.getLogger(__name__)

_OFFSET = struct.Struct("<q")
#: Keys that are not values start with NUL, which never occurs in a user id (intake rejects it). The
#: changelog's position marker and the local copy's input position share this key.
POSITION_KEY = b"\x00position"
_CHANGELOG_KEY = b"\x00changelog-next"

#: Encoded changes by key; None is a deletion (a tombstone in the changelog).
Changes = dict[bytes, bytes | None]


def encode_position(offset: int) -> bytes:
    return _OFFSET.pack(offset)


def decode_position(raw: bytes) -> int:
    return _OFFSET.unpack(raw)[0]


class StateCodec(Protocol):
    """How the values of a store are written (disk and changelog) and when they are no longer needed.

    The store does not know what it holds: the decision cores (``agents``) supply the codec.
    """

    def encode(self, value: Any) -> bytes: ...

    def decode(self, raw: bytes) -> Any: ...

    def expired(self, value: Any, watermark: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class FlushTransaction:
    """The changes one flush took from a store, and the input position they bring it to."""

    partition: int
    position: int  # the next input offset not reflected in the store after these changes
    changes: Changes

    def changelog_records(self) -> Iterator[tuple[bytes, bytes | None]]:
        """The changes, then the position marker that closes them (restore applies only closed records)."""
        yield from self.changes.items()
        yield POSITION_KEY, encode_position(self.position)


class PartitionStore(Protocol):
    """What the limiter, the flush and restore use of one partition's state."""

    partition: int
    position: int | None  # None: nothing persisted yet (consume from the group's offset)
    changelog_next: int
    watermark: float  # highest event time seen in this partition; the expiry clock
    expired_at: float  # the watermark of the last expiry: state needed only before it may be gone
    #: The value of a key or None (hot path: a bound method the caller may keep as a local).
    get: Callable[[str], Any]
    #: Set a key's value and remember that it changed (hot path, as ``get``).
    set: Callable[[str, Any], None]

    def delete(self, key: str) -> None: ...

    def __len__(self) -> int: ...

    def snapshot(self) -> dict[str, Any]: ...

    def expire(self) -> int: ...

    def take_changes(self, position: int) -> FlushTransaction: ...

    def persist(self, flush: FlushTransaction, changelog_next: int) -> None: ...

    def apply_changelog(self, changes: Changes, position: int, changelog_next: int) -> None: ...

    def wipe(self) -> None: ...

    def close(self) -> None: ...


class DictBackedStore:
    """Values in a dict, changes in a set; a subclass supplies the local copy (read, write, destroy)."""

    def __init__(self, partition: int, codec: StateCodec) -> None:
        self.partition = partition
        self.codec = codec
        self.position: int | None = None
        self.changelog_next = 0
        self.watermark = self.expired_at = 0.0
        values: dict[str, Any] = {}
        changed: set[str] = set()
        self._values, self._changed = values, changed
        self.get = values.get  # a bound builtin: as cheap as the dict itself

        def set_(key: str, value: Any) -> None:  # a closure: no attribute look-ups per call
            values[key] = value
            changed.add(key)

        self.set = set_

    def _load(self) -> None:
        decode, values = self.codec.decode, self._values
        for key, raw in self._read_local():
            if key == POSITION_KEY:
                self.position = decode_position(raw)
            elif key == _CHANGELOG_KEY:
                self.changelog_next = decode_position(raw)
            else:
                values[key.decode()] = decode(raw)
        logger.info("partition %d: %d values on disk, position %s, changelog at %d",
                    self.partition, len(values), self.position, self.changelog_next)

    def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._changed.add(key)

    def __len__(self) -> int:
        return len(self._values)

    def snapshot(self) -> dict[str, Any]:
        """A copy of every value (for inspection and tests; not the hot path)."""
        return dict(self._values)

    def expire(self) -> int:
        """Delete the values the codec says are no longer needed at the watermark; return how many."""
        watermark, expired = self.watermark, self.codec.expired
        self.expired_at = watermark
        dead = [key for key, value in self._values.items() if expired(value, watermark)]
        for key in dead:
            del self._values[key]
        self._changed.update(dead)
        return len(dead)

    def take_changes(self, position: int) -> FlushTransaction:
        """Take the keys changed since the last take, encoded; later changes go to the next take."""
        values, encode = self._values, self.codec.encode
        changes: Changes = {}
        for key in self._changed:
            value = values.get(key)
            changes[key.encode()] = None if value is None else encode(value)
        self._changed.clear()
        return FlushTransaction(self.partition, position, changes)

    def persist(self, flush: FlushTransaction, changelog_next: int) -> None:
        """Write a delivered flush to the local copy: its changes and both positions, atomically."""
        self._write(flush.changes, flush.position, changelog_next)

    def apply_changelog(self, changes: Changes, position: int, changelog_next: int) -> None:
        """Apply restored changelog records that a position marker closed: memory, then the local copy."""
        values, decode = self._values, self.codec.decode
        for key, raw in changes.items():
            if raw is None:
                values.pop(key.decode(), None)
            else:
                values[key.decode()] = decode(raw)
        self._write(changes, position, changelog_next)

    def _write(self, changes: Changes, position: int, changelog_next: int) -> None:
        self.position, self.changelog_next = position, changelog_next
        self._write_local(changes, {POSITION_KEY: encode_position(position),
                                    _CHANGELOG_KEY: encode_position(changelog_next)})

    def wipe(self) -> None:
        """Forget memory and the local copy (e.g. the changelog was recreated): restore from offset 0."""
        self._destroy_local()
        self._values.clear()
        self._changed.clear()
        self.position = None
        self.changelog_next = 0

    def _read_local(self) -> Iterable[tuple[bytes, bytes]]:
        raise NotImplementedError

    def _write_local(self, changes: Changes, positions: dict[bytes, bytes]) -> None:
        raise NotImplementedError

    def _destroy_local(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the local copy (memory is dropped with the object)."""


class MemoryPartitionStore(DictBackedStore):
    """A store whose local copy is a dict: pass the same ``disk`` to a new store to play a restart."""

    def __init__(self, partition: int, codec: StateCodec,
                 disk: MutableMapping[bytes, bytes] | None = None) -> None:
        super().__init__(partition, codec)
        self.disk: MutableMapping[bytes, bytes] = {} if disk is None else disk
        self._load()

    def _read_local(self) -> Iterable[tuple[bytes, bytes]]:
        return list(self.disk.items())

    def _write_local(self, changes: Changes, positions: dict[bytes, bytes]) -> None:
        disk = self.disk
        for key, raw in changes.items():
            if raw is None:
                disk.pop(key, None)
            else:
                disk[key] = raw
        disk.update(positions)

    def _destroy_local(self) -> None:
        self.disk.clear()
