"""Benchmark: Envoy's rate limit service over gRPC, ratewarden beside envoyproxy/ratelimit, driven by ghz.

    .venv/bin/python bench/rls_bench.py [--rounds 3] [--concurrency 32] [--duration 10s | --total N]
        [--users 1000] [--only ours|peer] [--write-docs] [--keep]

Both services get the same one-rule domain ``rw`` (key ``user``, ``--limit`` per minute, default so
high that nothing throttles: this measures the decision path, not refusals) and the same calls:
``ShouldRateLimit`` with one descriptor ``user=u<i>``, ``i`` drawn per call from ``--users`` users by
ghz's template function (``u{{randomInt 1 N+1}}``). Everything is on loopback and stopped by PID:

- **peer**: envoyproxy/ratelimit + Redis (``bench/peers/envoy_ratelimit.py``; built once by
  ``go install``), plaintext gRPC on ``GRPC_PORT``.
- **ours**: a Kafka broker (local KRaft unless ``KAFKA_BOOTSTRAP_SERVERS``), one worker and one
  gateway, started as ``bench/gateway/stack.py`` starts them, with ``RATEWARDEN_RLS_GRPC_PORT`` set
  (the gateway serves gRPC there), a service key sent as ``authorization: Bearer KEY`` metadata, and
  the rules published with ``ratewarden limits load rules.yaml``. It counts as ready once a call
  answers with the rule's limit.

ghz (``go install``, once) gets a protoset written from ``xds-protos`` (the peer has no server
reflection): ``ghz --insecure --protoset P --call ...ShouldRateLimit -c C -z DURATION --format json``,
after an unmeasured ``--warmup-total`` calls, and before the first round ``--burn-in`` (30 s) of
unmeasured load per system (a freshly started JVM broker spends its first minute compiling).
Rounds alternate the order of the systems. Per run:
requests/s, p50 and p99 (ghz's own percentiles), errors, CPU of the service's processes (peer:
service + Redis; ours: gateway, worker and the broker the benchmark started, each with children) per
call and of ghz itself (it takes much of a core on a 2-core machine). Then per system the median and
spread (min–max) over rounds and ours ÷ peer. ``--write-docs`` puts the Markdown into
``docs/benchmarks.md`` as the section ``## Envoy rate limit service (gRPC), ghz -c C``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.commands import command_line, interrupt_on_signals  # noqa: E402
from bench.peers.go_tools import GhzResult, parse_ghz  # noqa: E402
from bench.rls_report import SUMMARY, Run, every_row, markdown_section, summarize  # noqa: E402

__all__ = ["GhzResult", "Run", "parse_ghz", "ghz_command", "measure", "summarize", "markdown_section", "main"]

DOMAIN = "rw"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def ghz_command(ghz: Path, protoset: Path, target: str, concurrency: int, users: int, *, duration: str | None = None,
                total: int | None = None, key: str | None = None, connections: int = 1) -> list[str]:
    from bench.peers.rls_protoset import CALL

    data = {"domain": DOMAIN, "hits_addend": 1,
            "descriptors": [{"entries": [{"key": "user", "value": f"u{{{{randomInt 1 {users + 1}}}}}"}]}]}
    command = [str(ghz), "--insecure", "--protoset", str(protoset), "--call", CALL, "-c", str(concurrency),
               "--connections", str(connections), "--format", "json", "-d", json.dumps(data)]
    command += ["-n", str(total)] if total else ["-z", duration or "10s"]
    if key:
        command += ["-m", json.dumps({"authorization": f"Bearer {key}"})]
    return command + [target]


def _tree_cpu(pids: list[int]) -> float:
    from bench.procstats import tree_cpu_seconds

    return sum(tree_cpu_seconds(pid) for pid in pids)


def measure(command: list[str], pids: list[int]) -> tuple[GhzResult, float | None, float | None]:
    """One ghz run: its result, the service's CPU ms per call, ghz's own CPU % of a core."""
    before, children, start = _tree_cpu(pids), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 and not done.stdout.strip():
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr[-2000:]}")
    result = parse_ghz(done.stdout)
    spent = _tree_cpu(pids) - before
    ghz_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return (result, 1000.0 * spent / result.count if result.count else None,
            100.0 * ghz_cpu / wall if wall > 0 else None)


def start_ours(args, tmp: Path, stack, console: Console, grpc_port: int) -> tuple[str, str, list[int], str]:
    """Broker, worker and gateway as ``bench/gateway/stack.py`` starts them, gRPC on ``grpc_port``,
    the rule published; (target, key, pids, description). Waits for an answer carrying the rule."""
    from bench.gateway.stack import start_ours as start_stack
    from bench.peers.envoy_ratelimit import rules_yaml
    from ratewarden.processes import start_cli

    os.environ["RATEWARDEN_RLS_GRPC_PORT"] = str(grpc_port)  # read by Settings(), passed to the processes
    stack_args = argparse.Namespace(gateway_url=None, key=None, batch=0, partitions=args.partitions, limit=args.limit,
                                    gateway_arg=[])
    http_target, kafka = start_stack(stack_args, tmp, stack, console)
    key = http_target.headers["Authorization"].split(" ", 1)[1]
    rules = tmp / "rw.yaml"
    rules.write_text(rules_yaml(args.limit, DOMAIN))
    with console.status("ratewarden limits load rw.yaml, then waiting for gRPC answers with the rule"):
        loaded = start_cli(stack.settings, tmp / "limits-load.log", "limits", "load", str(rules)).wait(120)
        if loaded != 0:
            raise RuntimeError(f"ratewarden limits load exited {loaded}; see {tmp / 'limits-load.log'}")
        target = f"127.0.0.1:{grpc_port}"
        _wait_for_rule(target, key)
    broker = getattr(stack.broker, "_proc", None)
    pids = [p.pid for p in stack.processes] + ([broker.pid] if broker is not None else [])
    return target, key, pids, f"ratewarden gateway (gRPC) + 1 worker; Kafka: {kafka}"


def _wait_for_rule(target: str, key: str, timeout: float = 60.0) -> None:
    """Until a call answers OK with ``limit_remaining`` > 0: the rule applies (no rule: remaining 0)."""
    import grpc

    from bench.rls_differential import run

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = run(target, [([[("user", "warm-up")]], 1)], DOMAIN, key)[0]
            if last[0] == "OK" and last[1] and last[1][0][1] > 0:
                return
        except grpc.RpcError as error:
            last = error
        time.sleep(0.5)
    raise RuntimeError(f"no gRPC answer with the rule at {target} within {timeout:.0f} s (last: {last})")


def start_systems(args, tmp: Path, stack, console: Console) -> tuple[dict, list[tuple[str, str]]]:
    """{system: (gRPC target, key or None, PIDs charged)} and the facts for the report."""
    from bench.peers.envoy_ratelimit import VERSION, EnvoyRateLimit, build, ensure_packages, free_port

    targets, facts = {}, []
    if "ours" in args.systems:
        target, key, pids, what = start_ours(args, tmp, stack, console, free_port())
        targets["ours"], facts = (target, key, pids), [("ours", what)]
    if "peer" in args.systems:
        ensure_packages(console.print, ("redis-server",))
        with console.status("envoyproxy/ratelimit: go install (first time: minutes), then Redis and the service"):
            stack.peer = EnvoyRateLimit(build(console.print), tmp / "peer", args.limit, DOMAIN)
            stack.peer.start()
        targets["peer"] = (stack.peer.grpc_target, None, stack.peer.pids)
        facts.append(("peer", f"envoyproxy/ratelimit {VERSION} (go install, gRPC), Redis (no persistence)"))
    facts.append(("load", f"ghz v0.93.0 -c {args.concurrency} --connections {args.connections} "
                  + (f"-n {args.total}" if args.total else f"-z {args.duration}")
                  + f"; {args.users:,} users (one at random per call), limit {args.limit:,} per minute; "
                  f"{args.rounds} round(s), {args.burn_in or 'no'} burn-in per system, {args.warmup_total:,} unmeasured "
                  "calls before each run, order alternating"))
    return targets, facts


def measure_rounds(args, targets: dict, tmp: Path, console: Console) -> list[Run]:
    from bench.peers.envoy_ratelimit import build_ghz
    from bench.peers.rls_protoset import write_protoset

    with console.status("ghz: go install (first time: minutes)"):
        ghz = build_ghz(console.print)
    protoset, runs = write_protoset(tmp / "rls.protoset"), []

    def command(system: str, **load) -> list[str]:
        """ghz against ``system`` with this run's concurrency, users and key; ``load``: its duration or total."""
        target, key, _ = targets[system]
        return ghz_command(ghz, protoset, target, args.concurrency, args.users, key=key,
                           connections=args.connections, **load)

    for system in args.systems if args.burn_in else ():  # a fresh JVM broker compiles in its first minute
        with console.status(f"burn-in: {system}, {args.burn_in} unmeasured"):
            subprocess.run(command(system, duration=args.burn_in), capture_output=True)
    for round_no in range(args.rounds):
        for system in (args.systems if round_no % 2 == 0 else args.systems[::-1]):
            subprocess.run(command(system, total=args.warmup_total), capture_output=True)  # unmeasured
            with console.status(f"round {round_no + 1}: {system} at {targets[system][0]}"):
                result, cpu, ghz_cpu = measure(command(system, duration=args.duration, total=args.total),
                                               targets[system][2])
            runs.append(Run(round_no, system, result, cpu, ghz_cpu))
            console.print(" | ".join(every_row(runs[-1])))
    return runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", "-c", type=int, default=32, help="ghz -c: concurrent calls (default 32)")
    parser.add_argument("--connections", type=int, default=1, help="ghz --connections (default 1)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--duration", default="10s", help="ghz -z per measured run (default 10s)")
    load.add_argument("--total", type=int, help="ghz -n: calls per measured run instead of --duration")
    parser.add_argument("--warmup-total", type=int, default=2000, help="unmeasured calls before each run")
    parser.add_argument("--burn-in", default="30s", help="unmeasured ghz -z per system before the first round "
                                                          "(a fresh JVM broker compiles its hot code; '' for none)")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=1_000_000_000, help="per-user limit per minute, both systems")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--only", choices=["ours", "peer"], help="measure one system")
    parser.add_argument("--write-docs", action="store_true", help=f"write the section into {DOCS.name}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.systems = [args.only] if args.only else ["ours", "peer"]
    console = Console() if sys.stdout.isatty() else Console(width=200)
    interrupt_on_signals()
    from bench.gateway.stack import Stack

    tmp, stack = Path(tempfile.mkdtemp(prefix="rls-bench-")), Stack()
    with contextlib.ExitStack() as cleanup:  # last in, first out: the processes, then the directory
        cleanup.callback(lambda: console.print(f"kept {tmp}") if args.keep else shutil.rmtree(tmp, ignore_errors=True))
        cleanup.callback(stack.stop)
        try:
            targets, facts = start_systems(args, tmp, stack, console)
            runs = measure_rounds(args, targets, tmp, console)
        except KeyboardInterrupt:
            console.print("[red]interrupted: stopping everything the benchmark started[/red]")
            return 130
    table = Table(*SUMMARY, title=f"ShouldRateLimit over gRPC, ghz -c {args.concurrency}: medians (min–max)")
    for row in summarize(runs):
        table.add_row(*row)
    console.print(table)
    section = markdown_section(command_line("bench/rls_bench.py", argv), facts, runs)
    print(section)
    if args.write_docs:
        from bench.limiter_bench import replace_section

        title = f"Envoy rate limit service (gRPC), ghz -c {args.concurrency}"
        DOCS.write_text(replace_section(DOCS.read_text() if DOCS.exists() else "", title, section))
        console.print(f"wrote the section '{title}' of {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
