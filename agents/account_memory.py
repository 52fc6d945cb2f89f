"""A bounded "seen before" memory of accounts for the abuse analytics, expiring by event time.

Stage 1 of the analytics (one instance per ``decisions`` partition, which holds all of a user's
decisions) asks, when a window closes, which of the window's accounts were never active before: one
IP cycling through thousands of throwaway accounts shows as many new accounts. A set of every
account ever seen would grow without bound; :class:`AccountMemory` does not.

Design: time is cut into generations of ``span`` seconds of event time (generation ``floor(at /
span)``), each with its own Bloom filter of ``capacity`` accounts. A window ending at ``at`` is
checked against every live generation, then all its accounts go into the generation of ``at``.
Generations ``generations`` or more behind that of ``at`` are dropped, so an account is remembered
for at least ``(generations - 1) x span`` and less than ``generations x span`` of event time after
its last window (exactly ``generations x span`` when windows end on a generation boundary). Expiry
follows event time only: no wall clock, so replays and catch-up decide as live traffic did.

Error direction: a Bloom filter has no false negatives, only false positives. An account seen in a
live generation is always reported as seen; a truly new account is sometimes reported as seen. The
detector then under-counts new accounts: the safe direction, it can miss some abuse but never bans
for accounts invented by the filter. Each filter's rate stays at or below ``error_rate`` while its
generation holds at most ``capacity`` distinct accounts, and falls steeply below that (at half
capacity 0.025% with the defaults); past capacity it rises, so such windows are counted in
``saturated`` and logged once per generation. A new account is checked against every live filter,
so the rate the detector sees is about the sum of theirs: up to ``generations x error_rate`` when
every generation is full. Size ``capacity`` for the distinct accounts of one span with headroom
(docs/benchmarks.md, "Account memory": 8 generations at 66% of capacity 0.8%, at 100% 6.6%).

Sizing (standard formulas): ``m = -n ln p / (ln 2)^2`` bits and ``k = round(m / n ln 2)`` hashes
for ``n = capacity``, ``p = error_rate``. Defaults (100,000 accounts, 1%): 958,506 bits (119,814
bytes) and 7 hashes per generation; 24 generations of an hour hold at most 2.9 MB however many
accounts churn through. Positions use Kirsch-Mitzenmacher double hashing of one 16-byte BLAKE2b
digest per account, with the bit work vectorised in numpy over the whole window.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Iterable

import numpy as np

__all__ = ["AccountMemory"]

logger = logging.getLogger(__name__)


class AccountMemory:
    """Accounts seen in the last `generations` x `span` seconds of event time, in `generations` Bloom filters."""

    def __init__(self, capacity: int = 100_000, error_rate: float = 0.01, span: float = 3_600.0,
                 generations: int = 24) -> None:
        if capacity < 1 or not 0.0 < error_rate < 1.0 or span <= 0 or generations < 1:
            raise ValueError("capacity >= 1, 0 < error_rate < 1, span > 0 and generations >= 1")
        self.capacity, self.error_rate, self.span, self.generations = capacity, error_rate, span, generations
        self.bits = math.ceil(-capacity * math.log(error_rate) / math.log(2) ** 2)
        self.hashes = max(1, round(self.bits / capacity * math.log(2)))
        self._filters: dict[int, np.ndarray] = {}  # generation -> packed bits, newest last
        self._counts: dict[int, int] = {}  # generation -> accounts inserted that it did not hold
        self._warned: set[int] = set()
        self._last_at: float | None = None
        self.warm_since: float | None = None
        self.saturated = 0

    @property
    def nbytes(self) -> int:
        """Memory of the live filters' bit arrays, in bytes."""
        return sum(bits.nbytes for bits in self._filters.values())

    def _positions(self, accounts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(byte index, bit mask) of each account's ``hashes`` bits, arrays of shape (len, hashes)."""
        digests = b"".join(hashlib.blake2b(a.encode(), digest_size=16).digest() for a in accounts)
        pairs = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
        steps = np.arange(self.hashes, dtype=np.uint64)
        with np.errstate(over="ignore"):
            pos = (pairs[:, :1] + steps * (pairs[:, 1:] | np.uint64(1))) % np.uint64(self.bits)
        return (pos >> np.uint64(3)).astype(np.intp), (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8))

    @staticmethod
    def _holds(bits: np.ndarray, where: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        index, mask = where
        return (bits[index] & mask).astype(bool).all(axis=1)

    def _expire(self, generation: int) -> None:
        for old in [g for g in self._filters if g <= generation - self.generations]:
            del self._filters[old], self._counts[old]
            self._warned.discard(old)

    def add_window(self, accounts: Iterable[str], at: float) -> set[str]:
        """Fold the accounts active in one closed window ending at event time `at` (windows arrive in order); return those not seen before (in no live generation). Then remember them all in the generation of `at`; generations older than `generations` spans behind `at` are dropped (expiry by event time, never by wall clock)."""
        if self._last_at is not None and at < self._last_at:
            raise ValueError(f"window ending at {at} arrived after one ending at {self._last_at}")
        self._last_at = at
        if self.warm_since is None:
            self.warm_since = at
        generation = math.floor(at / self.span)
        self._expire(generation)
        batch = list(dict.fromkeys(accounts))
        if not batch:
            return set()
        where = self._positions(batch)
        current = self._filters.get(generation)
        if current is None:
            current = self._filters[generation] = np.zeros((self.bits + 7) // 8, dtype=np.uint8)
            self._counts[generation] = 0
        in_current = self._holds(current, where)
        unknown = np.flatnonzero(~in_current)  # checked newest first: most old accounts stop at the first
        for g in sorted(self._filters, reverse=True):
            if g != generation and unknown.size:
                found = self._holds(self._filters[g], (where[0][unknown], where[1][unknown]))
                unknown = unknown[~found]
        np.bitwise_or.at(current, where[0].ravel(), where[1].ravel())
        self._counts[generation] += int(in_current.size - np.count_nonzero(in_current))
        if self._counts[generation] > self.capacity:
            self.saturated += 1
            if generation not in self._warned:
                self._warned.add(generation)
                logger.warning("account memory: generation %d holds %d accounts, past its capacity %d: "
                               "false-positive rate above %s", generation, self._counts[generation],
                               self.capacity, self.error_rate)
        return {batch[i] for i in unknown.tolist()}

    def seen(self, account: str) -> bool:
        """Whether ``account`` is in a live generation (possibly falsely, never falsely not)."""
        if not self._filters:
            return False
        where = self._positions([account])
        return any(bool(self._holds(bits, where)[0]) for bits in self._filters.values())
