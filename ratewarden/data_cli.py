"""``ratewarden replay|trace|demo|schemas|simulate|report``: traces in, decisions and reports out."""

from pathlib import Path

from rich.console import Console

__all__ = ["add_parsers"]

console = Console()


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


def add_parsers(sub) -> None:
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
