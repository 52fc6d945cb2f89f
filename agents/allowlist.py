"""The allow-list, pure: known proxies and offices whose flags are reported, never banned.

Two sources make one list: the static seed (``RATEWARDEN_ALLOWLIST_CIDRS``, read when a process
starts; it cannot be removed at runtime) and the compacted ``allowlist`` topic (``schemas.allowlist``,
keyed by the normalised CIDR), which an :class:`Allowlist` follows through a ``ControlTable``
(``agents.control_tables.allowlist_table``), so ``ratewarden allowlist add`` and the gateway's
``PUT /allowlist/...`` apply without a restart.

What is allow-listed (:func:`covers`):

* an **address** when it lies inside an allowed network (as before the topic existed);
* a **network** (a CIDR subject: a flagged /64, a ban of a /24) when it **overlaps** an allowed
  network: inside one, or containing one. A network ban blocks every address inside it, so banning a
  /24 that holds an allow-listed office would block the office; the network is therefore not banned,
  and its other addresses are still judged, and banned, one by one.

Addresses and networks of different families never match. Answers are memoised per subject text in
a bounded memo, cleared whenever the list changes (changes are rare; subjects repeat).
"""

import ipaddress
import logging
from typing import Iterable

from agents.network_bans import normalize_cidr
from schemas.allowlist import AllowlistEntry

__all__ = ["Allowlist", "MEMO_SIZE", "Network", "STATIC_REASON", "allowlist_key", "covers", "parse_networks"]

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The memo is cleared when it passes this many subjects.
MEMO_SIZE = 65_536
#: What the static seed's entries say where an entry names its reason.
STATIC_REASON = "RATEWARDEN_ALLOWLIST_CIDRS (static: set when the workers start, not removable at runtime)"


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """The networks of CIDRs or addresses (host bits allowed); a bad one raises ValueError naming it."""
    return [ipaddress.ip_network(normalize_cidr(cidr)) for cidr in cidrs if cidr.strip()]


def allowlist_key(text: str) -> str:
    """The key of an allow-listed network: its normalised CIDR (``198.51.100.7`` is ``198.51.100.7/32``,
    ``2001:db8::1/64`` is ``2001:db8::/64``); ValueError naming anything else."""
    return normalize_cidr(text)


def _subject(subject: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | Network | None:
    try:
        if "/" in subject:
            return ipaddress.ip_network(subject, strict=False)
        return ipaddress.ip_address(subject)
    except (TypeError, ValueError):
        return None


def covers(subject: str, networks: Iterable[Network]) -> bool:
    """Whether ``subject`` (an address, or a CIDR) is allow-listed by ``networks`` (see the module's
    docstring); a subject that is neither lies in none."""
    parsed = _subject(subject)
    if parsed is None:
        return False
    if isinstance(parsed, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return any(parsed.version == n.version and parsed.overlaps(n) for n in networks)
    return any(parsed in n for n in networks)


class Allowlist:
    """The static seed plus the topic's entries, with a memoised :meth:`contains`.

    ``put`` takes the topic's records (key: the normalised CIDR; None: a tombstone). A record whose
    key is not its network's normalised CIDR raises ValueError (the table reading the topic logs and
    counts it)."""

    def __init__(self, static: Iterable[str] = ()) -> None:
        self.static: list[Network] = parse_networks(static)
        self._static_keys = {n.compressed for n in self.static}
        self._entries: dict[str, AllowlistEntry] = {}
        self._networks: list[Network] = list(self.static)
        self._memo: dict[str, bool] = {}
        self.changes = 0
        self.rejected = 0  # bad records of the topic (counted by the table that reads it)

    def __len__(self) -> int:
        return len(self._networks)

    def put(self, key: str, entry: AllowlistEntry | None) -> None:
        if entry is not None and allowlist_key(entry.network) != key:
            raise ValueError(f"allow-list entry for {entry.network!r} under another key, {key!r}")
        if entry is None:
            if self._entries.pop(key, None) is None:
                return
        else:
            self._entries[key] = entry
        self._networks = self.static + [ipaddress.ip_network(k) for k in self._entries]
        self._memo.clear()
        self.changes += 1
        logger.info("allow-list: %s %s (%d runtime entries, %d static)", "removed" if entry is None else "added",
                    key, len(self._entries), len(self.static))

    def contains(self, subject: str) -> bool:
        """Whether ``subject`` (an address or a CIDR) is allow-listed, statically or at runtime."""
        found = self._memo.get(subject)
        if found is None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            found = self._memo[subject] = covers(subject, self._networks)
        return found

    def networks(self) -> list[Network]:
        """Every allowed network: the static seed first, then the topic's."""
        return list(self._networks)

    def entries(self) -> list[AllowlistEntry]:
        """The runtime entries (the topic's), by key."""
        return [self._entries[key] for key in sorted(self._entries)]

    def entry(self, key: str) -> AllowlistEntry | None:
        return self._entries.get(key)

    def is_static(self, key: str) -> bool:
        """Whether the normalised CIDR ``key`` is one of the static seed's networks."""
        return key in self._static_keys

    def static_entries(self) -> list[AllowlistEntry]:
        """The static seed as entries (for listings): reason :data:`STATIC_REASON`, no time, no author."""
        return [AllowlistEntry(network=n.compressed, reason=STATIC_REASON) for n in self.static]
