"""Client addresses: the connection's peer, or ``X-Forwarded-For`` when the peer is a trusted proxy."""

import ipaddress

__all__ = ["ClientIp", "in_networks", "normalize_ip", "parse_networks", "UNKNOWN_IP"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Recorded when the peer is no IP address at all (a Unix socket, a test transport).
UNKNOWN_IP = "0.0.0.0"


def normalize_ip(text: str) -> str | None:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4), or None if it is not one.

    IPv6 zone ids (``fe80::1%eth0``) are refused, as the limiter's intake refuses them.
    """
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def parse_networks(text: str) -> list[Network]:
    """A comma-separated list of IPs or CIDRs (host bits allowed); a bad item raises ValueError naming it."""
    return [ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip()]


def in_networks(ip: str, networks: list[Network]) -> bool:
    """Whether ``ip`` lies in one of ``networks``; an unparseable address lies in none."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


class ClientIp:
    """Resolves the client IP of a request; ``trusted`` is a comma-separated list of IPs or CIDRs."""

    def __init__(self, trusted: str = "") -> None:
        self.networks = parse_networks(trusted)

    def is_trusted(self, ip: str) -> bool:
        return in_networks(ip, self.networks)

    def __call__(self, peer: str | None, forwarded: list[str]) -> str:
        """Walk ``X-Forwarded-For`` from the right while the hop is trusted; the first untrusted hop wins."""
        client = normalize_ip(peer) if peer else None
        if client is None:
            return UNKNOWN_IP
        if not self.networks or not forwarded or not self.is_trusted(client):
            return client
        hops = [hop for header in forwarded for hop in header.split(",")]
        for hop in reversed(hops):
            address = normalize_ip(hop)
            if address is None:
                break  # garbage in the chain: keep the last address a trusted proxy vouched for
            client = address
            if not self.is_trusted(address):
                break
        return client
