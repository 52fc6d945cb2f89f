"""``ratewarden limits tier set|delete|assign|unassign|list|import``: tiers of limits.

A tier is a named set of limits (one untyped, any number per request type) that each of its members
gets, unless the member has a limit of its own; memberships and the tiers' limits are records on the
compacted limits topic, so workers and gateways apply them live (``agents.rules.LimitBook``).

``ratewarden limits`` takes positional USER LIMIT arguments, so ``limits tier ...`` has a parser of
its own: :func:`tier_command` picks it out of the command line before the main parser sees it.
"""

import argparse
import logging
from pathlib import Path

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas.limits import ALGORITHMS, BURST_DESCRIPTION, TierLimit, TierMembership, check_tier_name

__all__ = ["build_parser", "read_tier_records", "run", "tier_command"]

logger = logging.getLogger(__name__)
console = Console()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ratewarden limits tier", description=__doc__.split("\n\n")[1])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="tier_action", required=True)
    p = sub.add_parser("set", help="set a tier's limit (or, with --type, its limit of one request type)")
    p.add_argument("name", help="the tier: 1 to 32 of A-Z a-z 0-9 _ . -, the first a letter or digit")
    p.add_argument("limit", type=int, help="requests per window, for each member")
    p.add_argument("--window", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="fixed")
    p.add_argument("--burst", type=int, help=BURST_DESCRIPTION)
    p.add_argument("--type", dest="type", help="limit only this request type (on top of the tier's limit)")
    p.add_argument("--shadow", action="store_true", help="decide, but never throttle")
    p = sub.add_parser("delete", help="remove a tier's limits (members keep the membership, get the default)")
    p.add_argument("name")
    p.add_argument("--type", dest="type", help="remove only the tier's limit of this request type")
    p = sub.add_parser("assign", help="make USER a member of tier NAME (replaces its tier, if any)")
    p.add_argument("user")
    p.add_argument("name")
    p = sub.add_parser("unassign", help="remove USER from its tier (back to its own limit or the default)")
    p.add_argument("user")
    sub.add_parser("list", help="the tiers, their limits and member counts")
    p = sub.add_parser("import", help="tiers' limits and memberships from FILE (JSON lines, as `advise` writes "
                       "advice_tiers.jsonl), in one send; nothing sent unless every line is valid")
    p.add_argument("file")
    return parser


def tier_command(argv: list[str]) -> argparse.Namespace | None:
    """The parsed ``[-v] limits tier ...`` command line, or None for any other command (argparse exits
    with status 2 on bad usage)."""
    start = 0
    while start < len(argv) and argv[start] in ("-v", "--verbose"):
        start += 1
    if argv[start:start + 2] != ["limits", "tier"]:
        return None
    args = build_parser().parse_args(argv[start + 2:])
    args.verbose = args.verbose or start > 0
    args.command, args.action, args.func = "limits", "tier", run
    return args


def run(args: argparse.Namespace) -> int:
    """Run a parsed tier command; bad input raises ValueError (``ratewarden`` prints it, exit status 2)."""
    from ratewarden import control

    action = args.tier_action
    if action == "list":
        return _list(*control.read_tiers())
    if action == "unassign":
        _, members = control.read_tiers()
        if args.user not in members:
            raise ValueError(f"{args.user!r} belongs to no tier")
        control.assign_tier(args.user, None)
        console.print(f"removed {escape(args.user)} from tier {escape(members[args.user])}")
        return 0
    if action == "import":
        limits, members = read_tier_records(Path(args.file))
        in_force = {x.tier for x in control.read_tiers()[0]} | {x.tier for x in limits}
        orphans = sorted({m.tier for m in members} - in_force)
        if orphans:
            raise ValueError(f"{args.file}: members of tiers without limits (in the file or in force): {orphans}")
        control.import_tiers(limits, members)
        console.print(f"imported {len(limits)} tier limit(s) and {len(members)} membership(s) from {escape(args.file)}")
        return 0
    name = check_tier_name(args.name)
    if action == "set":  # the record's constraints first (as ValueError), before Kafka is asked anything
        fields = dict(tier=name, limit=args.limit, window=args.window, request_type=args.type,
                      algorithm=args.algorithm, shadow=args.shadow, burst=args.burst)
        limit = msgspec.convert(fields, TierLimit)
        control.set_tier_limits([limit])
        _, members = control.read_tiers()
        console.print(f"set {escape(repr(limit))}; {_count(members, name)} member(s)")
        return 0
    if action == "assign":
        msgspec.convert({"user_id": args.user, "tier": name}, TierMembership)
    limits, members = control.read_tiers()
    mine = [x for x in limits if x.tier == name]
    if action == "delete":
        gone = [x for x in mine if args.type is None or x.request_type == args.type]
        if not gone:
            raise ValueError(f"tier {name!r} has no limit" + (f" for type {args.type!r}" if args.type else "s"))
        control.delete_tier_limits(gone)
        console.print(f"deleted {len(gone)} limit(s) of tier {name}; {_count(members, name)} member(s) keep it")
    else:  # assign
        if not mine:
            raise ValueError(f"tier {name!r} has no limits; set one first: ratewarden limits tier set {name} LIMIT")
        control.assign_tier(args.user, name)
        was = members.get(args.user)
        console.print(f"{escape(args.user)} is in tier {name}" + (f" (was {escape(was)})" if was else ""))
    return 0


def read_tier_records(path: Path) -> tuple[list[TierLimit], list[TierMembership]]:
    """``TierLimit`` and ``TierMembership`` records, one JSON object a line (a line with ``user_id`` is a
    membership); a bad line raises ValueError naming it."""
    limits, members = [], []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = msgspec.json.decode(line)
            if isinstance(item, dict) and "user_id" in item:
                members.append(msgspec.convert(item, TierMembership))
            else:
                limits.append(msgspec.convert(item, TierLimit))
        except msgspec.MsgspecError as exc:
            raise ValueError(f"{path}:{number}: not a tier limit or membership: {exc}") from None
    return limits, members


def _count(members: dict[str, str], tier: str) -> int:
    return sum(1 for t in members.values() if t == tier)


def _list(limits: list[TierLimit], members: dict[str, str]) -> int:
    table = Table("tier", "type", "limit", "window", "algorithm", "burst", "shadow", "members")
    names = sorted({x.tier for x in limits} | set(members.values()))
    for name in names:
        count = str(_count(members, name))
        mine = sorted((x for x in limits if x.tier == name), key=lambda x: x.request_type or "")
        if not mine:
            table.add_row(escape(name), "", "(none: the default)", "", "", "", "", count)
        for limit in mine:
            table.add_row(escape(name), escape(limit.request_type or "*"), str(limit.limit), f"{limit.window:g}",
                          limit.algorithm, "" if limit.burst is None else str(limit.burst), str(limit.shadow), count)
            count = ""
    console.print(table)
    return 0
