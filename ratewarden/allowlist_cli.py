"""``ratewarden allowlist add|remove|list``: the analytics' runtime allow-list.

An allow-listed address or network (a known proxy, an office) is still analysed and its flags are
reported, marked ``allowlisted``; the blocklist agent never bans it. Entries are records on the
compacted ``allowlist`` topic keyed by the normalised CIDR (an address is its /32 or /128), which the
analytics workers and the gateway follow live: no restart. ``RATEWARDEN_ALLOWLIST_CIDRS`` stays a
static seed of the workers, listed here as ``static`` and not removable at runtime.
"""

import argparse
import getpass
import logging
import time

from rich.console import Console
from rich.table import Table

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)
console = Console()


def add_parser(sub) -> None:
    """Register ``ratewarden allowlist`` on the main parser's subcommands."""
    p = sub.add_parser("allowlist", help="add, remove or list allow-listed addresses and networks (live, no restart)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("cidr", nargs="?", help="an address (its /32 or /128) or a CIDR such as 192.0.2.0/24 or "
                   "2001:db8:1:2::/64 (host bits are cleared)")
    p.add_argument("--reason", default="manual", help="add: why (default: manual)")
    p.set_defaults(func=run)


def _author() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``allowlist`` command; bad input raises ValueError (``ratewarden`` prints it, exit 2)."""
    from agents.allowlist import Allowlist, allowlist_key
    from ratewarden import control
    from schemas.allowlist import AllowlistEntry
    from streams.settings import get_settings

    settings = get_settings()
    static = Allowlist(settings.allowlist)
    if args.action == "list":
        return _list(static, control.read_allowlist(settings))
    if not args.cidr:
        raise ValueError(f"allowlist {args.action} needs CIDR (an address or a network)")
    cidr = allowlist_key(args.cidr)
    if args.action == "add":
        if not args.reason.strip() or len(args.reason) > 128:
            raise ValueError("--reason: 1 to 128 characters")
        control.allow(AllowlistEntry(network=cidr, reason=args.reason, added_at=time.time(), added_by=_author()),
                      settings)
        print(f"allow-listed {cidr}")
        return 0
    if not any(e.network == cidr for e in control.read_allowlist(settings)):
        if static.is_static(cidr):
            raise ValueError(f"{cidr} is in the static seed (RATEWARDEN_ALLOWLIST_CIDRS of the analytics workers, "
                             "read when they start): it cannot be removed at runtime")
        raise ValueError(f"{cidr} is not on the runtime allow-list (`ratewarden allowlist list`)")
    control.disallow(cidr, settings)
    print(f"removed {cidr} from the allow-list")
    return 0


def _list(static, entries) -> int:
    table = Table("network", "reason", "added (UTC)", "by", "static")
    for entry in static.static_entries():
        table.add_row(entry.network, "RATEWARDEN_ALLOWLIST_CIDRS", "", "", "yes")
    for entry in entries:
        added = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.added_at)) if entry.added_at else ""
        table.add_row(entry.network, entry.reason, added, entry.added_by, "")
    console.print(table)
    return 0
