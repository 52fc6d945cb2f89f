"""Benchmark: ratewarden side by side with quixstreams, a naive Faust agent and a passthrough ceiling.

    .venv/bin/python bench/limiter_bench.py [--events 200000] [--baseline-events 30000] [--users 1000]
        [--rounds 3] [--partitions 4] [--rate 0] [--live-seconds 10] [--only IMPL ...]
        [--markdown docs/benchmarks.md [--section TITLE]]

Implementations (``bench/impls.py``): ``ratewarden`` (``ratewarden worker --roles limiter``, at least
once), ``ratewarden-cidr`` (the same with 10,000 network bans on the blocklist, 1% of the users'
addresses inside one: each run checks that exactly their requests were blocked), ``ratewarden-eos``
(``ratewarden``, exactly once), ``ratewarden-all`` (limiter, request history and abuse analytics in
one process), ``quix`` and ``quix-tumbling`` (``bench/peers/quix_count.py``, the
same windowed count written with quixstreams, in its own venv built by ``bench/peers/quix_venv.sh``),
``naive`` (``bench/peers/naive_faust.py``, a per-event Faust agent, the baseline) and ``passthrough``
(``bench/peers/passthrough.py``: consume, decode, encode, produce; no state: the ceiling). The
summary shows ratewarden's median rate divided by each one's. Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a local Kafka
(``LocalKafka`` in a temporary directory) and stops it at the end. Each round runs every
implementation once, in alternating order, each on fresh topics, a fresh app id and a fresh state
directory (``Settings.scoped``):

1. backlog: N events are published first, then the worker starts; decisions/s = N / (CreateTime of
   the last decision - CreateTime of the first); worker CPU% over that interval and peak RSS (VmHWM)
   from /proc; one decision per request id is checked (duplicates / missing).
2. live: with the worker caught up, a pacer process offers ``--rate`` events/s (default: half the
   throughput just measured) for ``--live-seconds``; latency = decision CreateTime - request
   CreateTime, p50/p95/p99.

Also recorded: the CPU used by processes the benchmark did not start (others' work on a shared
machine; with ``KAFKA_BOOTSTRAP_SERVERS`` that includes the broker) and whether the implementations
agree on the verdicts of the backlog requests they all decided. ``--py-spy DIR`` profiles each
worker's backlog run (see ``bench/profile.py``). This is a benchmark script, not a test: it prints
figures and never asserts on them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.commands import command_line, interrupt_on_signals  # noqa: E402
from bench.impls import CIDR_BANS, KEYS, NOT_LIMITERS, banned_users, implementations  # noqa: E402
from bench.report import PER_RUN_HEADERS, agreement, machine, markdown, per_run_rows, rich_table, summary_rows  # noqa: E402
from bench.procstats import wait_quiet  # noqa: E402
from bench.profile import summarize  # noqa: E402
from bench.runner import Children, RunResult, run_once  # noqa: E402
from bench.workload import HEAVY_SHARE, HEAVY_WEIGHT, STEP, Workload, base_timestamp  # noqa: E402
from streams.devkafka.broker import KAFKA_VERSION, LocalKafka  # noqa: E402
from streams.settings import Settings  # noqa: E402

__all__ = ["main", "build_parser", "quix_python", "replace_section"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="backlog events for ratewarden")
    parser.add_argument("--baseline-events", type=int, default=30_000, help="backlog events for the naive Faust agent")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="live offered rate, events/s (0: half of each run's measured throughput)")
    parser.add_argument("--live-seconds", type=float, default=10.0)
    parser.add_argument("--only", nargs="+", choices=KEYS, metavar="IMPL",
                        help=f"run only these implementations (of {', '.join(KEYS)})")
    parser.add_argument("--naive-store", default="rocksdb://", help="table store of the naive Faust agent")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--markdown", "--out", dest="markdown", type=Path,
                        help="write the results as Markdown into this file, as the section --section")
    parser.add_argument("--section", default="Side by side: the default worker (issue 12)",
                        help="the file's '## ' section the results replace (appended when it is missing)")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                        help="before each measured phase, wait up to SECONDS for processes the benchmark did "
                             "not start to use < 15%% CPU for 3 s (for shared machines)")
    parser.add_argument("--py-spy", dest="py_spy", type=Path, metavar="DIR",
                        help="profile each worker's backlog run with py-spy into DIR (slows the measured runs)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    return parser


def quix_python(console: Console) -> str | None:
    """The quixstreams venv's python (built once by bench/peers/quix_venv.sh), or None if it cannot be built."""
    script = Path(__file__).resolve().parent / "peers" / "quix_venv.sh"
    with console.status("quixstreams venv (bench/peers/quix_venv.sh)"):
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        console.print(f"[red]no quixstreams peer: {script.name} failed[/red]\n{done.stderr[-2000:]}")
        return None
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    interrupt_on_signals()  # SIGTERM/SIGHUP -> the same clean-up path as Ctrl-C
    tmp = Path(tempfile.mkdtemp(prefix="ratewarden-bench-"))
    children, broker = Children(), None
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            kafka = f"external broker at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)"
        else:
            broker = LocalKafka(tmp / "kafka")
            with console.status(f"starting Kafka {KAFKA_VERSION} (local KRaft JVM)"):
                bootstrap = broker.start()
            kafka = (f"Apache Kafka {KAFKA_VERSION}, single-node KRaft JVM started by the benchmark "
                     f"(LocalKafka, heap 512 MiB), loopback")
        console.print(f"Kafka: {kafka}; work directory {tmp}")
        wanted = args.only or KEYS
        quix_py = quix_python(console) if any(k.startswith("quix") for k in wanted) else None
        impls = [i for i in implementations(args.events, args.baseline_events, args.naive_store, quix_py)
                 if i.key in wanted]
        results = _run_all(args, impls, bootstrap, tmp, children, console)
        _print(console, results, impls)
        if args.markdown:
            _write_markdown(args.markdown, command_line("bench/limiter_bench.py", argv), kafka, results, impls, args)
            console.print(f"wrote the results to {args.markdown}, section '{args.section}'")
        return 0
    except KeyboardInterrupt:
        console.print("[red]interrupted: stopping everything the benchmark started[/red]")
        return 130
    finally:
        children.stop_all()
        if broker is not None:
            broker.stop()
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _run_all(args, impls, bootstrap: str, tmp: Path, children: Children, console: Console) -> list[RunResult]:
    workload = Workload(args.users, args.seed)
    base_ts = base_timestamp(max(i.events for i in impls))
    run_id = time.strftime("%H%M%S")
    results: list[RunResult] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("runs", total=args.rounds * len(impls))
        step = progress.add_task("", total=1)
        for round_no in range(args.rounds):
            order = impls if round_no % 2 == 0 else impls[::-1]
            for impl in order:
                prefix = f"round {round_no + 1} {impl.label}"

                def report(what: str, done: int, total: int, prefix=prefix) -> None:
                    progress.update(step, description=f"{prefix}: {what}", completed=done, total=total)

                def settle(phase: str, report=report, prefix=prefix) -> None:
                    if args.quiet_wait > 0:
                        report(f"{phase}: waiting for other processes to go quiet", 0, 1)
                        share = wait_quiet(args.quiet_wait)
                        if share >= 15.0:
                            progress.console.print(f"[yellow]{prefix} {phase}: other processes still use "
                                                   f"{share:.0f}% CPU[/yellow]")

                result = run_once(impl, round_no, bootstrap, tmp, f"rwbench-{run_id}-r{round_no}-{impl.key}",
                                  args.partitions, workload, base_ts, args.rate, args.live_seconds, children, report,
                                  args.py_spy, settle)
                results.append(result)
                if impl.key == "ratewarden-cidr":
                    progress.console.print(f"{prefix}: {_check_bans(result, workload)}")
                lat = result.latency_ms
                progress.console.print(
                    f"{prefix}: {result.rate or 0:,.0f} decisions/s, CPU {result.cpu or 0:.0f}%, "
                    f"RSS {result.rss_mib or 0:.0f} MiB; live {result.offered or 0:,.0f}/s "
                    f"(achieved {result.achieved or 0:,.0f}) p50 {lat.get('p50', float('nan')):.0f} "
                    f"p99 {lat.get('p99', float('nan')):.0f} ms; dup/missing {result.duplicates}/{result.missing}, "
                    f"live {result.live_duplicates}/{result.live_missing}"
                )
                for problem in result.problems:
                    progress.console.print(f"  [yellow]problem:[/yellow] {problem}")
                progress.advance(overall)
    return results


def _check_bans(result: RunResult, workload: Workload) -> str:
    """Whether the worker held the network bans: exactly the backlog requests of the users whose address
    one of them contains were blocked (a problem is recorded otherwise)."""
    banned = {user for user in banned_users() if user < workload.users}
    users = workload.user_sequence(result.events, workload.seed)
    expected = {workload.request_id("b", i) for i, user in enumerate(users) if user in banned}
    blocked = {request_id for request_id, verdict in result.verdicts.items() if verdict == "block"}
    line = (f"{CIDR_BANS:,} network bans loaded: {len(blocked & expected):,} of the {len(expected):,} backlog requests "
            f"from the {len(banned)} users inside a ban were blocked, {len(blocked - expected):,} others")
    if blocked != expected:
        result.problems.append(f"network bans not (all) enforced: {line}")
    return line


def _extra_lines(results: list[RunResult], impls) -> list[str]:
    keys = [i.key for i in impls]
    lines = [line for key in keys[1:] if key not in NOT_LIMITERS for line in agreement(results, keys[0], key)]
    lines += [f"round {r.round + 1} {r.impl}: {p}" for r in results for p in r.problems]
    return lines


def _print(console: Console, results: list[RunResult], impls) -> None:
    labels = {i.key: i.label for i in impls}
    console.print(rich_table(summary_rows(results, labels), "ratewarden benchmark (medians over rounds)"))
    table = Table(*PER_RUN_HEADERS, title="every run")
    for row in per_run_rows(results):
        table.add_row(*row)
    console.print(table)
    for line in _extra_lines(results, impls):
        console.print(line)
    for result in results:
        if result.profile is not None and result.profile.exists():
            console.print("\n".join(summarize(result.profile)), highlight=False)


def _write_markdown(path: Path, command: str, kafka: str, results: list[RunResult], impls, args) -> None:
    labels = {i.key: i.label for i in impls}
    facts = machine(kafka)
    limit = Settings()
    facts.append(("workload", f"{args.users:,} users, {args.partitions} partitions, JSON request events keyed by "
                              f"user, event time +{STEP * 1000:g} ms per event, {HEAVY_SHARE:.0%} heavy users at "
                              f"{HEAVY_WEIGHT:g}× the others' rate (seed {args.seed}); default limit {limit.default_limit} per "
                              f"{limit.default_window:g} s, "
                              "fixed window"))
    notes = {i.label: i.notes for i in impls}
    text = markdown(command, facts, summary_rows(results, labels), results, notes, _extra_lines(results, impls))
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    path.write_text(replace_section(old, args.section, "#" + text if text.startswith("## ") else text))


def replace_section(document: str, title: str, body: str) -> str:
    """``document`` with its ``## title`` section (up to the next ``## `` heading) replaced by ``body``
    under that heading, or with the section appended when there is none; the rest is kept as it is."""
    lines = document.splitlines(keepends=True)
    heading = f"## {title}"
    section = [f"{heading}\n", "\n", body if body.endswith("\n") else body + "\n"]
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == heading]
    if not starts:
        gap = [] if not document else ["\n"] if document.endswith("\n") else ["\n\n"]
        return "".join(lines + gap + section)
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[:start] + section + (["\n"] if end < len(lines) else []) + lines[end:])


if __name__ == "__main__":
    sys.exit(main())
