"""The ``ratewarden`` command: broker, topics, worker, gateway, limits, blocklist, allow-list, users, replay,
trace, simulate, report, what-if, advice and demo (each group of subcommands in a module of its own)."""

import argparse
import logging
import sys

from rich.console import Console
from rich.markup import escape

__all__ = ["main", "build_parser"]

console = Console()


def build_parser() -> argparse.ArgumentParser:
    from ratewarden import control_cli, data_cli, service_cli
    from ratewarden.advise import add_parser as add_advise_parser
    from ratewarden.allowlist_cli import add_parser as add_allowlist_parser
    from ratewarden.whatif import add_parser as add_whatif_parser

    parser = argparse.ArgumentParser(prog="ratewarden", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    service_cli.add_parsers(sub)  # kafka, topics, worker, gateway
    control_cli.add_parsers(sub)  # limits, blocklist, users
    data_cli.add_parsers(sub)  # replay, trace, demo, schemas, simulate, report
    add_whatif_parser(sub)
    add_advise_parser(sub)
    add_allowlist_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ratewarden.control_cli import check
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
    if (missing := check(args)) is not None:
        build_parser().error(missing)
    try:
        return args.func(args)
    except (RuntimeError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)  # one line, even with [brackets]
        return getattr(exc, "exit_status", 2)


if __name__ == "__main__":
    sys.exit(main())
