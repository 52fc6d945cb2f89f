"""Benchmark: ratewarden's gateway beside envoyproxy/ratelimit + Redis, driven by wrk, on loopback.

    .venv/bin/python bench/gateway_bench.py [--rounds 3] [--seconds 10] [--concurrency 1 32] [--users 1000]
        [--limit 1000000000] [--load wrk|own] [--rate R] [--half-peak] [--batch N]
        [--paced-load vegeta|own] [--background-rate 50000] [--systems ours peer] [--quiet-wait S] [--markdown FILE [--section TITLE]]

What runs (everything on this machine, loopback only, stopped by PID at the end, on errors and on
Ctrl-C/SIGTERM):

- **ours**: a Kafka broker (``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local KRaft broker in a
  temporary directory), one ``ratewarden worker`` and one ``ratewarden gateway`` (``--gateway-arg``
  passes arguments on, e.g. ``--gateway-arg=--workers --gateway-arg=2``) on fresh topics, per-user
  limit ``--limit`` per 60 s (default: nothing throttles), the load's address on the analytics'
  allow-list (analysed, never banned), and a service key. Calls:
  ``POST /requests`` with ``{"request_type":"bench","user_id":"uN","ip":"192.0.2.10"}`` and
  ``Authorization: Bearer <service key>``. ``--gateway-url URL --key KEY`` measures a gateway that is
  already running instead (no broker, worker or ``--background-rate`` then).
- **peer**: envoyproxy/ratelimit (pinned commit, built once by ``go install`` into
  ``~/.cache/ratewarden/go``: see ``bench/peers/envoy_ratelimit.py``) with Redis 7 (Debian, no
  persistence); rule ``user`` at ``--limit`` per minute in domain ``rw``. Calls: ``POST /json`` with
  ``{"domain":"rw","descriptors":[{"entries":[{"key":"user","value":"uN"}]}]}``.
  ``redis-server`` and ``wrk`` are installed with apt-get when not on PATH (you are told).

Each of ``--rounds`` rounds measures, for each ``--concurrency`` C (default 1 and 32 connections),
both systems one after the other (the order alternates between rounds) with the same ``--users``
users (``u1`` .. ``uN``, one chosen at random per request):

- ``--load wrk`` (default): ``wrk -t1 -cC -dS --latency -s SCRIPT`` after an unmeasured
  ``--warmup`` run. Before the first round each system takes ``--burn-in`` seconds (30) of wrk
  load at the largest C, unmeasured: a freshly started JVM broker spends its first minute
  compiling (with ``--load own`` there is no burn-in: count the first round as one). The Lua
  script (generated into the temporary directory) prepares one request per
  user (or, with ``--batch``, a pool of batch bodies of random users) and picks one at random per
  request; its ``response()`` hook counts statuses and its ``done()`` hook prints the exact
  percentiles as JSON. Decisions/s counts only 200 and 429 answers (a decision; with ``--batch``,
  x the batch size), minus answers that carry no decision (``"fail_open": true``, an item
  ``"status": "unavailable"``); everything else (other statuses, socket errors, timeouts) is
  reported as errors, never as throughput.
- ``--load own``: this process's asyncio HTTP/1.1 client (raw sockets, uvloop), closed loop at C
  connections; with ``--rate R`` open loop instead: request i is due at t0 + i/R, sent by the first
  free of C connections, and its latency counts from its *due* time (a late send is not hidden: no
  coordinated omission). The note "send lag p99" says how late the client itself sent: this Python
  client keeps a schedule of a few thousand calls/s on a 2-core machine, not the peer's half peak;
  a large lag means the p99 measures the client too.
- ``--half-peak``: after the wrk runs of a round, each system is paced at half of the rate wrk
  measured for it at the largest C in that round (``--paced-connections`` connections, default 64)
  by vegeta (``--paced-load vegeta``, the default: a constant-rate load generator in Go, built by
  ``go install`` into the Go cache the first time; ``bench/gateway/vegeta.py``) or by the own client
  (``--paced-load own``); p50/p99 from the due time, the note says how late the pacer itself sent
  (issue 10: at half of the peak, p99 <= 25 ms).
- ``--batch N``: wrk posts batches: ours ``POST /requests/batch`` with ``{"requests": [N items]}``
  (answer 200 ``{"decisions": [...]}``), the peer one ``/json`` call with N descriptors (it decides
  them together, one Redis pipeline). Figures in decisions/s = requests/s x N.
- ``--background-rate R``: in each round, ours at the largest C is measured once more while a
  separate process (``bench/pacer.py``) produces R request events/s of 1,000 *other* users
  (``user-00000`` ..) to the requests topic; the table shows its throughput and gateway CPU per
  decision with and without (issue 10: at most 20% fewer, CPU flat).

CPU per decision: CPU seconds of the gateway process and its children (ours) or of the ratelimit
service + Redis (peer) over the measured interval, divided by the decisions. "others' CPU": the
share of a core that processes the benchmark did not start used meanwhile (a shared machine's noise;
``--quiet-wait SECONDS`` waits before each run for it to fall under 15%). For ours, the note gives the
worker's event-loop stalls during the run (the share of its loop probe's 10 ms timers that ran more
than 10 ms late, and how many more than 50 ms: ``bench/gateway/loop_stalls.py``). Printed: every run, then
per mode, concurrency and system the median and spread (min–max) over rounds of decisions/s, p50 and
p99, with ours ÷ peer. ``--markdown FILE`` writes that as the ``## --section`` of FILE (replaced if
present, else appended). A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from bench.commands import command_line, interrupt_on_signals  # noqa: E402
from bench.gateway.measure import run_rounds  # noqa: E402
from bench.gateway.report import print_tables, replace_section, summarize, write_markdown  # noqa: E402
from bench.gateway.stack import Stack, start_ours, start_peer  # noqa: E402
from bench.gateway.target import Target  # noqa: E402
from bench.gateway.wrk import parse_wrk, wrk_script  # noqa: E402

__all__ = ["main", "build_parser", "parse_wrk", "wrk_script", "Target", "summarize", "replace_section"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--burn-in", type=float, default=30.0, metavar="SECONDS",
                        help="unmeasured seconds of wrk load on each system before the first round (the broker's JIT)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], metavar="C",
                        help="connections (default: 1 32)")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=1_000_000_000,
                        help="per-user limit per 60 s, both systems (default: nothing throttles)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--systems", nargs="+", choices=["ours", "peer"], default=["ours", "peer"])
    parser.add_argument("--load", choices=["wrk", "own"], default="wrk",
                        help="wrk (default) or this process's asyncio client (closed loop, or paced with --rate)")
    parser.add_argument("--rate", type=float, default=None,
                        help="with --load own: open loop at this many calls/s, latency from due times")
    parser.add_argument("--half-peak", action="store_true",
                        help="per round, pace each system at half its wrk rate at the largest C; report p99")
    parser.add_argument("--paced-connections", type=int, default=64)
    parser.add_argument("--paced-load", choices=["vegeta", "own"], default="vegeta",
                        help="the half-peak runs' pacer: vegeta (default, Go, built into the Go cache) or the own client")
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="N decisions per call: ours POST /requests/batch, the peer N descriptors per /json")
    parser.add_argument("--background-rate", type=float, default=0.0, metavar="R",
                        help="also measure ours at the largest C while R events/s of other users are produced")
    parser.add_argument("--gateway-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument for `ratewarden gateway` (repeat: --gateway-arg=--workers "
                             "--gateway-arg=2)")
    parser.add_argument("--gateway-url", help="measure this running gateway (with --key) instead of starting one")
    parser.add_argument("--key", help="a service key of --gateway-url")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                        help="before each measured run, wait up to SECONDS for processes the benchmark did not "
                             "start to use < 15%% CPU for 3 s (for shared machines)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--markdown", type=Path, help="write the results into this Markdown file as --section")
    parser.add_argument("--section", default="Gateway side by side with envoyproxy/ratelimit (issue 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, scripts)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.gateway_url and not args.key:
        parser.error("--gateway-url needs --key")
    if args.rate and args.load != "own":
        parser.error("--rate needs --load own (wrk cannot pace)")
    if (args.half_peak or args.background_rate) and args.load != "wrk":
        parser.error("--half-peak and --background-rate measure with wrk (--load wrk)")
    if args.background_rate and (args.gateway_url or "ours" not in args.systems):
        parser.error("--background-rate needs the benchmark's own broker, worker and gateway")
    console = Console() if sys.stdout.isatty() else Console(width=200)
    interrupt_on_signals()  # SIGTERM/SIGHUP -> the same clean-up path as Ctrl-C
    from bench.peers.envoy_ratelimit import ensure_packages

    needed = (("wrk",) if args.load == "wrk" else ()) + (("redis-server",) if "peer" in args.systems else ())
    ensure_packages(lambda text: console.print(f"[yellow]{text}[/yellow]"), needed)
    if args.half_peak and args.paced_load == "vegeta":
        from bench.peers.go_tools import build_tool

        with console.status("vegeta: go install into the Go cache (first time: a minute)"):
            build_tool("vegeta", console.print)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    stack = Stack()
    facts: list[tuple[str, str]] = []
    try:
        targets = []
        if "ours" in args.systems:
            target, kafka = start_ours(args, tmp, stack, console)
            targets.append(target)
            facts.append(("ours", kafka if args.gateway_url else
                          f"ratewarden gateway + 1 worker (gateway options: {' '.join(args.gateway_arg) or 'defaults'}); "
                          f"Kafka: {kafka}"))
        if "peer" in args.systems:
            target, what = start_peer(args, tmp, stack, console)
            targets.append(target)
            facts.append(("peer", what))
        console.print(f"work directory {tmp}; " + "; ".join(f"{k}: {v}" for k, v in facts))
        runs = run_rounds(args, targets, stack, tmp, console)
        print_tables(console, runs)
        if args.markdown:
            write_markdown(args.markdown, args.section, command_line("bench/gateway_bench.py", argv), facts, runs, args)
            console.print(f"wrote the results to {args.markdown}, section '{args.section}'")
        return 0
    except KeyboardInterrupt:
        console.print("[red]interrupted: stopping everything the benchmark started[/red]")
        return 130
    finally:
        stack.stop()
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
