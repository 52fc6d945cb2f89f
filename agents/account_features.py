"""Stage 1's account and network features of a closed window, pure: no Kafka, no clock.

When a window of one ``decisions`` partition closes, :meth:`WindowFeatures.enrich` fills in, per address:

* ``new_users``: its accounts never active before this window (in this partition, which holds every
  decision of an account: they are keyed by user), from a bounded :class:`agents.account_memory.AccountMemory`;
  ``accounts_known`` is how many accounts that was judged for: all of them once the memory has covered
  ``account_warmup`` seconds of event time, none before (after a fresh start or a restart every
  account looks new, so nothing is said until the memory has seen enough);
* ``victim_users``: its accounts that were tried from at least ``victim_min_networks`` networks in the
  window, or were in the last ``victim_memory`` seconds (distributed stuffing: a signal about the
  account, attributed here to every source that tries it while it lasts);

and adds one window per aggregated network (an IPv6 address's /64 by default; an IPv4 /24 when
``network_v4_prefix`` is 24) with the union of its addresses' accounts: the flood from one /64 with a
fresh address per request is one subject again. Every figure is exact per partition and sums exactly
over partitions in stage 2, because an account's decisions all live in one partition.
"""

import ipaddress
import logging
from functools import lru_cache

from agents.account_memory import AccountMemory
from agents.ip_windows import IpWindow
from streams.settings_sections import DetectorSettings

__all__ = ["WindowFeatures", "network_of"]

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1 << 16)
def network_of(ip: str, v6_prefix: int = 64, v4_prefix: int = 32) -> str:
    """The CIDR of the network ``ip`` is aggregated into, or "" (an IPv4 address at /32, or not an address)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = v6_prefix if address.version == 6 else v4_prefix
    if prefix >= address.max_prefixlen:
        return ""
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False).compressed


class WindowFeatures:
    """The account memory of one ``decisions`` partition and the settings its features use."""

    def __init__(self, settings: DetectorSettings, memory: AccountMemory | None = None) -> None:
        self.settings = settings
        self.memory = memory if memory is not None else AccountMemory(
            capacity=settings.account_memory_capacity, span=settings.account_memory_span,
            generations=settings.account_memory_generations,
        )
        self.victims: dict[str, float] = {}  # account -> event time it stops being a victim

    def warm(self, end: float) -> bool:
        since = self.memory.warm_since
        return since is not None and end - since >= self.settings.account_warmup

    def enrich(self, end: float, ips: dict[str, IpWindow]) -> None:
        """Fill the account features of the window ending at ``end`` and add its network windows to ``ips``."""
        s = self.settings
        user_networks: dict[str, set[str]] = {}
        networks: dict[str, list[IpWindow]] = {}
        for ip, acc in ips.items():
            acc.network = network = network_of(ip, s.network_v6_prefix, s.network_v4_prefix)
            if network:
                networks.setdefault(network, []).append(acc)
            where = network or ip
            for user in acc.users:
                seen = user_networks.get(user)
                if seen is None:
                    user_networks[user] = {where}
                else:
                    seen.add(where)
        warm = self.warm(end)  # judged before this window is folded in: its own accounts do not warm it
        new = self.memory.add_window(user_networks, end)
        victims = self._victims(end, user_networks)
        windows = list(ips.values())
        for network, members in networks.items():
            ips[network] = _network_window(network, members)
            windows.append(ips[network])
        for acc in windows:
            if warm:
                acc.accounts_known = len(acc.users)
                acc.new_users = len(acc.users & new) if new else 0
            if victims:
                acc.victim_users = len(acc.users & victims)

    def _victims(self, end: float, user_networks: dict[str, set[str]]) -> set[str]:
        """This window's victims (tried from many networks) and those still remembered; expired ones forgotten."""
        until, remembered = end + self.settings.victim_memory, self.victims
        for user, seen in user_networks.items():
            if len(seen) >= self.settings.victim_min_networks:
                remembered[user] = until
        for user in [u for u, t in remembered.items() if t <= end]:
            del remembered[user]
        return set(remembered)


def _network_window(network: str, members: list[IpWindow]) -> IpWindow:
    """One window of a network: its addresses' counts summed, their accounts united."""
    merged = IpWindow(min(m.first for m in members), set(), kind="network")
    merged.network = network
    for m in members:
        merged.requests += m.requests
        merged.users |= m.users
        for kind, n in m.types.items():
            merged.types[kind] = merged.types.get(kind, 0) + n
        merged.throttled += m.throttled
        merged.blocked += m.blocked
        merged.logins_known += m.logins_known
        merged.logins_failed += m.logins_failed
        merged.server_errors += m.server_errors
        merged.last = max(merged.last, m.last)
    return merged
