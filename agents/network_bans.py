"""Network (CIDR) bans, indexed for the limiter's hot path.

:class:`NetworkBans` answers "which bans contain this address?" once per event, so it is built for
that question. A lookup parses the address once (``socket.inet_pton``: about ten times faster than
``ipaddress.ip_address``), then bisects the sorted outermost banned networks of its family: most
addresses are in none, and that answer costs the same for 10 bans as for 10,000 whatever their
prefix lengths (probing 100 IPv6 prefix lengths one by one would cost microseconds). Only an
address inside some ban probes the per-prefix-length dicts (network address shifted right by its
host bits -> ban) of the prefix lengths in use, longest first. Results are memoised per address
text (the same clients come back), in a bounded memo cleared whenever the bans change; the
outermost networks are re-sorted at the first lookup after a change (milliseconds for 10,000).

IPv4-mapped IPv6 addresses (``::ffff:198.51.100.7``) are the IPv4 address they carry, as the
gateway records them: IPv4 bans cover them (a ``/p`` counting as ``/96+p`` when ranked against
IPv6 bans), and so do IPv6 bans containing the mapped address itself (``::/0``, ``::ffff:0:0/96``).
A plain IPv4 address is never covered by an IPv6 ban.
"""

import ipaddress
import logging
import socket
from bisect import bisect_right

from schemas.limits import BlocklistEntry

__all__ = ["NetworkBans", "normalize_cidr", "MEMO_SIZE"]

logger = logging.getLogger(__name__)

#: The memo is cleared when it passes this many addresses.
MEMO_SIZE = 65_536

_BITS = {4: 32, 6: 128}
_MAPPED = 0xFFFF  # the upper 96 bits of an IPv4-mapped IPv6 address
_NONE: tuple[BlocklistEntry, ...] = ()


def normalize_cidr(cidr: str) -> str:
    """The canonical text of a network (host bits cleared); a bad CIDR raises ValueError naming it."""
    return _network(cidr).compressed


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(cidr, str) or "%" in cidr:
        raise ValueError(f"{cidr!r} is not an IPv4 or IPv6 network (CIDR)")
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{cidr!r} is not an IPv4 or IPv6 network (CIDR)") from None


def _address(ip: str) -> tuple[int, int] | None:
    """(version, address as an int) of an IP address text, or None if it is not one."""
    try:
        if ":" in ip:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except (OSError, TypeError, ValueError):  # not an address; a NUL byte; not a str
        return None


class NetworkBans:
    """Bans by network: :meth:`put` / :meth:`remove` by CIDR, :meth:`lookup` / :meth:`matches` by address."""

    def __init__(self, memo_size: int = MEMO_SIZE) -> None:
        self.memo_size = memo_size
        self._by_cidr: dict[str, BlocklistEntry] = {}
        # version -> prefix length -> (network address >> host bits) -> entry
        self._tables: dict[int, dict[int, dict[int, BlocklistEntry]]] = {4: {}, 6: {}}
        # version -> ((host bits, prefix length, table), ...), longest prefix first: what a lookup probes
        self._probes: dict[int, tuple[tuple[int, int, dict[int, BlocklistEntry]], ...]] = {4: (), 6: ()}
        # version -> (starts, ends) of the outermost banned networks, sorted; None: rebuild at the next lookup
        self._outer: dict[int, tuple[list[int], list[int]] | None] = {4: ([], []), 6: ([], [])}
        self._memo: dict[str, tuple[BlocklistEntry, ...]] = {}

    def __len__(self) -> int:
        return len(self._by_cidr)

    def __bool__(self) -> bool:
        return bool(self._by_cidr)

    def __contains__(self, cidr: str) -> bool:
        return normalize_cidr(cidr) in self._by_cidr

    def items(self) -> list[tuple[str, BlocklistEntry]]:
        """(normalised CIDR, entry) of every ban."""
        return list(self._by_cidr.items())

    def put(self, cidr: str, entry: BlocklistEntry) -> str:
        """Ban ``cidr`` (replacing a ban of the same network); returns its normalised text."""
        network = _network(cidr)
        name, bits = network.compressed, _BITS[network.version]
        host = bits - network.prefixlen
        self._tables[network.version].setdefault(network.prefixlen, {})[int(network.network_address) >> host] = entry
        self._by_cidr[name] = entry
        self._changed(network.version)
        return name

    def remove(self, cidr: str) -> BlocklistEntry | None:
        """Lift the ban of ``cidr`` (any spelling of the network); returns it, or None if there was none."""
        network = _network(cidr)
        entry = self._by_cidr.pop(network.compressed, None)
        if entry is None:
            return None
        tables = self._tables[network.version]
        table = tables[network.prefixlen]
        del table[int(network.network_address) >> (_BITS[network.version] - network.prefixlen)]
        if not table:
            del tables[network.prefixlen]
        self._changed(network.version)
        return entry

    def _changed(self, version: int) -> None:
        bits = _BITS[version]
        tables = self._tables[version]
        self._probes[version] = tuple((bits - p, p, tables[p]) for p in sorted(tables, reverse=True))
        self._outer[version] = None
        self._memo.clear()

    def _outermost(self, version: int) -> tuple[list[int], list[int]]:
        """(starts, ends) of the banned networks no other banned network contains, sorted.

        Two networks are either nested or disjoint, so sorting by (start, larger first) and keeping
        each one that starts at or past the end of the last kept is enough."""
        outer = self._outer[version]
        if outer is None:
            bits = _BITS[version]
            spans = sorted((key << (bits - p), -(1 << (bits - p)))
                           for p, table in self._tables[version].items() for key in table)
            starts: list[int] = []
            ends: list[int] = []
            for start, minus_size in spans:
                if not ends or start >= ends[-1]:
                    starts.append(start)
                    ends.append(start - minus_size)
            outer = self._outer[version] = (starts, ends)
        return outer

    def lookup(self, ip: str) -> BlocklistEntry | None:
        """The ban of the most specific network containing ``ip``; None if none does or ``ip`` is no address."""
        found = self.matches(ip)
        return found[0] if found else None

    def matches(self, ip: str) -> tuple[BlocklistEntry, ...]:
        """Every ban whose network contains ``ip``, most specific first (memoised per address text)."""
        found = self._memo.get(ip)
        if found is None:
            found = self._find(ip)
            if len(self._memo) >= self.memo_size:
                logger.debug("network ban memo full (%d addresses); clearing it", len(self._memo))
                self._memo.clear()
            self._memo[ip] = found
        return found

    def _find(self, ip: str) -> tuple[BlocklistEntry, ...]:
        parsed = _address(ip)
        if parsed is None:
            return _NONE
        version, address = parsed
        mapped = version == 6 and address >> 32 == _MAPPED  # ::ffff:a.b.c.d: its IPv4 bans too
        if not mapped:  # the common case, inlined: one bisection says "in no banned network"
            starts, ends = self._outer[version] or self._outermost(version)
            i = bisect_right(starts, address) - 1
            if i < 0 or address >= ends[i]:
                return _NONE
        found = self._probe(version, address, 0)
        if mapped:
            found += self._probe(4, address & 0xFFFF_FFFF, 96)
            found.sort(key=lambda hit: hit[0], reverse=True)
        return tuple(entry for _, entry in found) if found else _NONE

    def _probe(self, version: int, address: int, rank: int) -> list[tuple[int, BlocklistEntry]]:
        """(``rank`` + prefix length, ban) of each ban of ``version`` containing ``address``, longest first."""
        starts, ends = self._outer[version] or self._outermost(version)
        i = bisect_right(starts, address) - 1
        if i < 0 or address >= ends[i]:
            return []
        return [(rank + p, entry) for host, p, table in self._probes[version]
                if (entry := table.get(address >> host)) is not None]
