"""Client addresses: the connection's peer, or ``X-Forwarded-For`` when the peer is a trusted proxy."""

import ipaddress

__all__ = ["ClientIp", "normalize_ip", "UNKNOWN_IP"]

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


class ClientIp:
    """Resolves the client IP of a request; ``trusted`` is a comma-separated list of IPs or CIDRs."""

    def __init__(self, trusted: str = "") -> None:
        self.networks = [ipaddress.ip_network(item.strip(), strict=False) for item in trusted.split(",") if item.strip()]

    def is_trusted(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return any(address in network for network in self.networks)

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
