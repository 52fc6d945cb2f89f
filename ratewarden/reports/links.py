"""Links from the report to the gateway's web console: one page per flagged address or network.

The console serves ``/console/ip/<address>`` and ``/console/network/<address>/<prefix>``. The base is
what an analyst would open: the gateway (``http://host:8080``) or its console
(``http://host:8080/console/``), from ``ratewarden report --console-url`` or the environment variable
``RATEWARDEN_GATEWAY_URL``; either form gives the same links.
"""

import ipaddress
import os
from urllib.parse import quote

__all__ = ["GATEWAY_URL_ENV", "console_base", "console_link", "console_url_from_env"]

#: The environment variable the report reads when no ``--console-url`` is given.
GATEWAY_URL_ENV = "RATEWARDEN_GATEWAY_URL"


def console_base(url: str) -> str:
    """``<scheme>://<host>[:port][/prefix]/console`` for a gateway or console URL (no trailing slash)."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"console URL must start with http:// or https://: {url!r}")
    return base if base.endswith("/console") else base + "/console"


def console_link(base: str, subject: str) -> str:
    """The console page of ``subject``: an address (``/ip/<addr>``) or a CIDR (``/network/<addr>/<prefix>``).

    A network is written in its canonical form (host bits cleared), as the console names it.
    """
    root = console_base(base)
    if "/" in subject:
        network = ipaddress.ip_network(subject, strict=False)
        return f"{root}/network/{quote(str(network.network_address), safe=':')}/{network.prefixlen}"
    try:
        subject = str(ipaddress.ip_address(subject))
    except ValueError:  # not an address (hand-made input): linked as written, escaped
        pass
    return f"{root}/ip/{quote(subject, safe=':')}"


def console_url_from_env(environ=os.environ) -> str | None:
    """``$RATEWARDEN_GATEWAY_URL`` if set and not blank, else None (no links)."""
    value = environ.get(GATEWAY_URL_ENV, "").strip()
    return value or None
