"""The ``ratewarden`` command: broker, topics, worker, limits, blocklist, allow-list, replay, trace and demo."""

import argparse
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["main", "build_parser"]

console = Console()


def _kafka(args) -> int:
    from streams.devkafka.broker import LocalKafka, SaslSsl, local_home
    from streams.settings import get_settings

    settings = get_settings()
    sasl_ssl = SaslSsl.from_settings(settings) if args.sasl_ssl else None
    broker = LocalKafka(Path(args.home) if args.home else local_home(settings.var_dir), sasl_ssl=sasl_ssl)
    if args.action == "start":
        print(broker.start())
        if sasl_ssl:  # what clients set besides the user name and password (never printed)
            print(f"RATEWARDEN_KAFKA_SECURITY_PROTOCOL=SASL_SSL RATEWARDEN_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 "
                  f"RATEWARDEN_KAFKA_SSL_CAFILE={broker.ca_file}")
    elif args.action == "stop":
        print("stopped" if broker.stop() else "not running")
    else:
        status = broker.status()
        print(status or "not running")
        return 0 if status else 1
    return 0


def _topics(args) -> int:
    from streams.settings import get_settings
    from streams.topics import ensure_topics

    for name, count in sorted(ensure_topics(get_settings()).items()):
        print(f"{name}\t{count} partitions")
    return 0


ROLES = ("limiter", "rls", "history", "analytics")


def roles_env(spec: str) -> dict[str, str]:
    """``RATEWARDEN_<ROLE>_ENABLED`` for every role, from a comma-separated list of the roles to run."""
    roles = {r.strip() for r in spec.split(",") if r.strip()}
    unknown = roles - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"expected a comma-separated subset of {', '.join(ROLES)}, got {spec!r}")
    return {f"RATEWARDEN_{role.upper()}_ENABLED": "true" if role in roles else "false" for role in ROLES}


def _worker(args) -> int:
    from ratewarden.worker import run_worker
    from streams.settings import get_settings

    if args.roles is not None:
        try:
            os.environ.update(roles_env(args.roles))  # read by Settings in this process (the Faust worker)
        except ValueError as exc:
            raise SystemExit(f"--roles: {exc}") from None
        get_settings.cache_clear()
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)
    run_worker(loglevel=args.loglevel)
    return 0


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


def _blocklist_kind(args) -> tuple[str, str | None]:
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

    kind, subject = _blocklist_kind(args)
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


def _replay(args) -> int:
    from ratewarden.replay import read_trace, replay, write_decisions
    from ratewarden.summary import print_summary

    events = read_trace(Path(args.trace))
    decisions = replay(events, timeout=args.timeout)
    if args.out:
        write_decisions(Path(args.out), decisions)
    print_summary(decisions, console)
    return 0


def _trace(args) -> int:
    from ratewarden.replay import write_trace
    from ratewarden.synth import synthetic_trace

    n = write_trace(Path(args.out), synthetic_trace(users=args.users, minutes=args.minutes, seed=args.seed))
    print(f"wrote {n} events to {args.out}")
    return 0


def _demo(args) -> int:
    from ratewarden.demo import run_demo

    return run_demo(console, users=args.users, minutes=args.minutes, seed=args.seed, keep=args.keep)


def _schemas(args) -> int:
    from ratewarden.schema_files import write_all

    for path in write_all():
        print(path)
    return 0


def _gateway(args) -> int:
    from ratewarden.gateway.server import serve
    from streams.kafka_config import resolve_bootstrap
    from streams.settings import get_settings

    if args.grpc_port is not None:  # read by Settings here and in every --workers process
        os.environ["RATEWARDEN_RLS_GRPC_PORT"] = str(args.grpc_port)
        get_settings.cache_clear()
    resolve_bootstrap(get_settings())  # a refused Kafka login fails here in one line, not in uvicorn's start-up
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    try:
        serve(get_settings(), args.host, args.port, args.tls_cert, args.tls_key, args.loglevel, args.workers,
              args.reuse_port)
    except ValueError as exc:  # options that do not fit together: one line, no traceback
        raise SystemExit(f"ratewarden gateway: {exc}") from None
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


def _simulate(args) -> int:
    from ratewarden.replay import write_trace
    from ratewarden.simulate import simulate, write_labels

    if args.profiles:  # honest users of known rate profiles (labels["profiles"]), for `ratewarden advise`
        from ratewarden.sim_profiles import simulate_profiles

        sim = simulate_profiles(minutes=args.minutes, users=args.users, seed=args.seed)
    else:
        sim = simulate(minutes=args.minutes, users=args.users, seed=args.seed)
    n = write_trace(Path(args.out), sim.events)
    write_labels(Path(args.labels), sim.labels)
    print(f"wrote {n} events to {args.out}; {len(sim.labels['attackers'])} attacking IPs in {args.labels}")
    return 0


def _report(args) -> int:
    from ratewarden.reports import run_report
    from ratewarden.reports.links import console_url_from_env
    from streams.settings import get_settings

    if args.decisions is None and not args.from_topics:
        raise ValueError("give --decisions FILE (and --flags FILE), or --from-topics")
    settings = get_settings() if args.from_topics else None
    flags = Path(args.flags) if args.flags else None
    run_report(Path(args.out), Path(args.decisions) if args.decisions else None, flags, settings, console, args.top,
               console_url=args.console_url or console_url_from_env())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from schemas.limits import ALGORITHMS, BURST_DESCRIPTION

    parser = argparse.ArgumentParser(prog="ratewarden", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("kafka", help="the local KRaft broker assembled from Maven Central")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--home", help="broker directory (default: $RATEWARDEN_VAR_DIR/kafka)")
    p.add_argument("--sasl-ssl", action="store_true", help="start: clients log in with SCRAM-SHA-512 over TLS as "
                   "RATEWARDEN_KAFKA_SASL_USERNAME / _PASSWORD (docs/architecture.md, Kafka security)")
    p.set_defaults(func=_kafka)

    sub.add_parser("topics", help="create the topics (idempotent)").set_defaults(func=_topics)

    p = sub.add_parser("worker", help="run one Faust worker (limiter, rls, history and analytics unless --roles)")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--roles", help=f"comma-separated roles this worker runs, of {','.join(ROLES)} (default: "
                                   "RATEWARDEN_<ROLE>_ENABLED, all on)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on HOST:PORT")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for the metrics port (default loopback)")
    p.set_defaults(func=_worker)

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

    p = sub.add_parser("replay", help="publish a trace and wait for every decision")
    p.add_argument("trace")
    p.add_argument("--out")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without progress before giving up")
    p.set_defaults(func=_replay)

    p = sub.add_parser("trace", help="write a synthetic trace")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_trace)

    p = sub.add_parser("demo", help="broker, worker, gateway, simulated attacks replayed, report; stops what it started")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="afterwards keep broker, worker and gateway running for the "
                   "web console: print its URL and an analyst's and an admin's key; Ctrl-C stops everything")
    p.set_defaults(func=_demo)

    sub.add_parser("schemas", help="regenerate the JSON Schema files").set_defaults(func=_schemas)

    p = sub.add_parser("simulate", help="write a labelled trace: honest users, NAT offices and attacks")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True, help="trace (JSON lines, replay format)")
    p.add_argument("--labels", required=True, help="labels (JSON): attacking IPs and from when, offices, allow-list")
    p.add_argument("--profiles", action="store_true", help="instead: honest users of named rate profiles (light, "
                   "regular, heavy, api) and a few attacks; labels[\"profiles\"] names each user's")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("report", help="abuse report: top offenders, timeline, CSV + Parquet, PNG charts")
    p.add_argument("--decisions", help="decisions (JSON lines, e.g. from `replay --out`)")
    p.add_argument("--flags", help="flags (JSON lines of IpFlag)")
    p.add_argument("--from-topics", action="store_true", help="read the decisions and ip-flags topics instead")
    p.add_argument("--out", required=True, help="directory for the CSV, Parquet and PNG files")
    p.add_argument("--top", type=int, default=15, help="offenders to list")
    p.add_argument("--console-url", help="the gateway's URL (e.g. http://127.0.0.1:8080): print each top "
                   "offender's web console page; default $RATEWARDEN_GATEWAY_URL, else no links")
    p.set_defaults(func=_report)

    from ratewarden.whatif import add_parser as add_whatif_parser

    add_whatif_parser(sub)  # ratewarden whatif

    from ratewarden.advise import add_parser as add_advise_parser

    add_advise_parser(sub)  # ratewarden advise

    from ratewarden.allowlist_cli import add_parser as add_allowlist_parser

    add_allowlist_parser(sub)  # ratewarden allowlist

    p = sub.add_parser("gateway", help="serve the HTTP API (POST /requests, history, limits, users, blocklist)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--tls-cert", help="PEM certificate (chain): serve HTTPS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--loglevel", default="info")
    p.add_argument("--workers", type=int, default=1,
                   help="gateway processes on the one port, each with its own Kafka clients (default 1)")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # one of --workers' processes
    p.add_argument("--grpc-port", type=int, help="also serve Envoy's rate limit service (gRPC RLS v3) on this port "
                   "(RATEWARDEN_RLS_GRPC_PORT; host: RATEWARDEN_RLS_GRPC_HOST, default loopback)")
    p.set_defaults(func=_gateway)

    p = sub.add_parser("users", help="create (e.g. the first admin), delete or list API users")
    p.add_argument("action", choices=["create", "delete", "list"])
    p.add_argument("user_id", nargs="?", help="default for create: <role>-<random>")
    p.add_argument("--role", choices=["client", "service", "analyst", "admin"], default="client")
    p.add_argument("--key-only", action="store_true", help="print only the new API key")
    p.set_defaults(func=_users)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ratewarden.tiers_cli import tier_command

    argv = sys.argv[1:] if argv is None else argv
    tier = tier_command(argv)  # `limits tier ...` has a parser of its own
    args, extra = (tier, []) if tier is not None else build_parser().parse_known_args(argv)
    if extra and getattr(args, "action", None) == "load" and args.user is None and len(extra) == 1:
        args.user = extra.pop()  # `limits load --check FILE`: argparse leaves FILE over after the option
    if extra:
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # kafka-python's event-loop timing diagnostics are noise on a busy machine
        logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    if args.command == "limits" and args.action in ("load", "unload") and not args.user:
        build_parser().error("limits load needs FILE (a rules YAML file), limits unload a DOMAIN")
    if args.command == "limits" and args.action in ("set", "delete") and not args.user:
        build_parser().error("limits set|delete needs USER (and LIMIT for set)")
    if args.command == "limits" and args.action == "set" and args.limit is None:
        build_parser().error("limits set needs LIMIT")
    if args.command == "users" and args.action == "delete" and not args.user_id:
        build_parser().error("users delete needs USER_ID")
    if args.command == "blocklist" and args.action in ("add", "remove") and not args.subject:
        build_parser().error("blocklist add|remove needs SUBJECT")
    try:
        return args.func(args)
    except (RuntimeError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # one line, even with [brackets]
        return getattr(exc, "exit_status", 2)


if __name__ == "__main__":
    sys.exit(main())
