"""``ratewarden limits|blocklist|users``: the control records on the compacted topics, from a shell.

``limits tier ...`` has its own parser (``ratewarden.tiers_cli``); descriptor rules files are
``ratewarden.rules_cli``'s. :func:`check` holds what argparse cannot say about positional arguments.
"""

from rich.console import Console
from rich.table import Table

__all__ = ["add_parsers", "blocklist_kind", "check"]

console = Console()


def _limits(args) -> int:
    from ratewarden import control
    from ratewarden.rules_cli import list_rules, load_rules_file, unload_domain
    from schemas.limits import RateLimit

    if args.action == "load":
        return load_rules_file(args.user, args.check)
    if args.action == "rules":
        return list_rules()
    if args.action == "unload":
        return unload_domain(args.user)
    if args.action == "set":
        limit = RateLimit(
            user_id=args.user, limit=args.limit, window=args.window, request_type=args.type,
            algorithm=args.algorithm, shadow=args.shadow, burst=args.burst,
        )
        control.set_limit(_validated(limit))
        print(f"set {limit}")
    elif args.action == "delete":
        control.delete_limit(args.user, args.type)
        print(f"deleted limit of {args.user}" + (f" for {args.type}" if args.type else ""))
    elif args.json:  # one RateLimit a line: what `whatif --limits` and `--in-force` read
        import msgspec

        for limit in sorted(control.read_limits(), key=lambda x: (x.user_id, x.request_type or "")):
            print(msgspec.json.encode(limit).decode())
    else:
        table = Table("user", "type", "limit", "window", "algorithm", "burst", "shadow")
        for limit in sorted(control.read_limits(), key=lambda x: (x.user_id, x.request_type or "")):
            table.add_row(limit.user_id, limit.request_type or "*", str(limit.limit), f"{limit.window:g}",
                          limit.algorithm, "" if limit.burst is None else str(limit.burst), str(limit.shadow))
        console.print(table)
    return 0


def _validated(record):
    """Run msgspec's constraints (a constructor does not check them)."""
    import msgspec

    return msgspec.convert(msgspec.to_builtins(record), type(record))


def blocklist_kind(args) -> tuple[str, str | None]:
    """(kind, subject) of ``blocklist add|remove``: ``--kind``, else ``--user``, else a network when the
    subject has a ``/`` (an IP otherwise); a network's subject is normalised (ValueError if no CIDR)."""
    kind = args.kind or ("user" if args.user else "network" if args.subject and "/" in args.subject else "ip")
    if args.user and kind != "user":
        raise ValueError(f"--user contradicts --kind {kind}")
    if kind == "network" and args.subject:
        from agents.network_bans import normalize_cidr

        return kind, normalize_cidr(args.subject)
    return kind, args.subject


def _blocklist(args) -> int:
    from ratewarden import control
    from schemas.limits import BlocklistEntry

    kind, subject = blocklist_kind(args)
    if args.action == "add":
        entry = BlocklistEntry(subject=subject, kind=kind, reason=args.reason, start=args.start, ttl=args.ttl)
        control.block(_validated(entry))
        print(f"blocked {kind} {subject}")
    elif args.action == "remove":
        control.unblock(kind, subject)
        print(f"unblocked {kind} {subject}")
    else:
        table = Table("kind", "subject", "reason", "start", "ttl")
        for e in control.read_blocklist():
            table.add_row(e.kind, e.subject, e.reason, f"{e.start:.3f}", "forever" if e.ttl is None else f"{e.ttl:g}")
        console.print(table)
    return 0


def _users(args) -> int:
    from ratewarden.gateway.users import create_user, delete_user, read_users

    if args.action == "create":
        user, key = create_user(args.user_id, args.role)
        print(key if args.key_only else f"created {user.role} {user.user_id}; API key (shown only now):\n{key}")
    elif args.action == "delete":
        if not delete_user(args.user_id):
            raise ValueError(f"no user {args.user_id!r}")
        print(f"deleted {args.user_id}; its key no longer works")
    else:
        table = Table("user", "role", "created")
        for user in sorted(read_users().values(), key=lambda u: u.user_id):
            table.add_row(user.user_id, user.role, f"{user.created_at:.0f}")
        console.print(table)
    return 0


def check(args) -> str | None:
    """What is missing from a parsed control command, or None."""
    if args.command == "limits" and args.action in ("load", "unload") and not args.user:
        return "limits load needs FILE (a rules YAML file), limits unload a DOMAIN"
    if args.command == "limits" and args.action in ("set", "delete") and not args.user:
        return "limits set|delete needs USER (and LIMIT for set)"
    if args.command == "limits" and args.action == "set" and args.limit is None:
        return "limits set needs LIMIT"
    if args.command == "users" and args.action == "delete" and not args.user_id:
        return "users delete needs USER_ID"
    if args.command == "blocklist" and args.action in ("add", "remove") and not args.subject:
        return "blocklist add|remove needs SUBJECT"
    return None


def add_parsers(sub) -> None:
    from schemas.limits import ALGORITHMS, BURST_DESCRIPTION

    p = sub.add_parser("limits", help="set, delete or list rate limits (live, no restart)",
                       epilog="tiers of limits: ratewarden limits tier set|delete|assign|unassign|list (--help)")
    p.add_argument("action", choices=["set", "delete", "list", "load", "rules", "unload"],
                   help="load FILE: descriptor rules (envoyproxy/ratelimit's format, docs/rls.md); rules: list them; "
                        "unload DOMAIN: remove a domain's rules")
    p.add_argument("user", nargs="?", help="the user (set, delete), the rules file (load) or the domain (unload)")
    p.add_argument("--check", action="store_true", help="load: validate the rules file only, publish nothing")
    p.add_argument("limit", nargs="?", type=int)
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--type", dest="type")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="fixed")
    p.add_argument("--burst", type=int, help=BURST_DESCRIPTION)
    p.add_argument("--shadow", action="store_true")
    p.add_argument("--json", action="store_true", help="list: one RateLimit JSON record a line")
    p.set_defaults(func=_limits)

    p = sub.add_parser("blocklist", help="add, remove or list blocked IPs, networks (CIDRs) or users")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("subject", nargs="?", help="an IP, a CIDR such as 198.51.100.0/24 or 2001:db8:1:2::/64, or a user id")
    p.add_argument("--kind", choices=["ip", "network", "user"],
                   help="what SUBJECT is (default: network if it has a '/', else ip; a CIDR is normalised)")
    p.add_argument("--user", action="store_true", help="the subject is a user id (as --kind user)")
    p.add_argument("--reason", default="manual")
    p.add_argument("--start", type=float, default=0.0, help="event time the entry starts")
    p.add_argument("--ttl", type=float, default=None, help="seconds of event time (default: forever)")
    p.set_defaults(func=_blocklist)

    p = sub.add_parser("users", help="create (e.g. the first admin), delete or list API users")
    p.add_argument("action", choices=["create", "delete", "list"])
    p.add_argument("user_id", nargs="?", help="default for create: <role>-<random>")
    p.add_argument("--role", choices=["client", "service", "analyst", "admin"], default="client")
    p.add_argument("--key-only", action="store_true", help="print only the new API key")
    p.set_defaults(func=_users)
