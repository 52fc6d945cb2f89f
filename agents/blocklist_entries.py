"""Whether a request is blocklisted: blocked IPs, networks and users, by event time.

A plain in-memory structure fed by the compacted ``blocklist`` topic through :mod:`streams.tables`
(:func:`agents.control_tables.blocklist_table`); it does no I/O, so it is unit-tested directly.
"""

import logging

from agents.network_bans import NetworkBans, normalize_cidr
from schemas.limits import BlocklistEntry

__all__ = ["Blocklist"]

logger = logging.getLogger(__name__)


class Blocklist:
    """Blocked IPs, networks (CIDRs) and users, each active from ``start`` for ``ttl`` seconds of event time.

    Entries are kept by the subject of their topic key (what :meth:`entries` lists and a tombstone
    names); network bans are also indexed by :class:`agents.network_bans.NetworkBans`, whose key is
    the normalised network, so two spellings of one network are one ban there: the one put last
    (the other takes over if that one is removed). A network entry whose subject is no CIDR is
    logged, counted in :attr:`rejected` and skipped: a bad record must not stop the worker."""

    def __init__(self) -> None:
        self._by_kind: dict[str, dict[str, BlocklistEntry]] = {"ip": {}, "network": {}, "user": {}}
        self._ips, self._networks, self._users = self._by_kind["ip"], self._by_kind["network"], self._by_kind["user"]
        self.network_index = NetworkBans()
        self._network_matches = self.network_index.matches
        self._network_names: dict[str, str] = {}  # subject -> normalised network
        self.rejected = 0

    def __len__(self) -> int:
        return sum(map(len, self._by_kind.values()))

    def entries(self) -> list[BlocklistEntry]:
        return [entry for entries in self._by_kind.values() for entry in entries.values()]

    def put(self, kind: str, subject: str, entry: BlocklistEntry | None) -> None:
        if kind == "network":
            self._put_network(subject, entry)
            return
        entries = self._by_kind.setdefault(kind, {})  # another kind is kept (and listed), never matched
        if entry is None:
            entries.pop(subject, None)
        else:
            entries[subject] = entry

    def _put_network(self, subject: str, entry: BlocklistEntry | None) -> None:
        if entry is None:
            self._networks.pop(subject, None)
            name = self._network_names.pop(subject, None)
            if name is not None:
                self.network_index.remove(name)
                for other, other_name in self._network_names.items():  # another spelling of the same network
                    if other_name == name:
                        self.network_index.put(other_name, self._networks[other])
            return
        try:
            name = self.network_index.put(subject, entry)
        except ValueError:
            self.rejected += 1
            logger.warning("blocklist: skipped network entry %r: not a CIDR (%d rejected)", subject, self.rejected)
            return
        self._networks[subject] = entry
        self._network_names[subject] = name

    def network_subjects(self, cidr: str) -> list[str]:
        """The subjects (as keyed on the topic) of the entries banning the network ``cidr``, any spelling."""
        name = normalize_cidr(cidr)
        return sorted(subject for subject, other in self._network_names.items() if other == name)

    def reason(self, user_id: str, ip: str, ts: float) -> str | None:
        """``ip_blocked`` / ``network_blocked`` / ``user_blocked`` when an entry is active at event time ``ts``.

        Runs once per event: lookups by subject (no key tuple), none while nothing is blocked; a
        network lookup is memoised per address (see :mod:`agents.network_bans`)."""
        if self._ips and (entry := self._ips.get(ip)) is not None and _active(entry, ts):
            return "ip_blocked"
        if self._networks:
            for entry in self._network_matches(ip):
                if _active(entry, ts):
                    return "network_blocked"
        if self._users and (entry := self._users.get(user_id)) is not None and _active(entry, ts):
            return "user_blocked"
        return None


def _active(entry: BlocklistEntry, ts: float) -> bool:
    return entry.start <= ts and (entry.ttl is None or ts < entry.start + entry.ttl)
