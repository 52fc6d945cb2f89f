"""Measuring: one run of one system (load by wrk or the own client, the CPU charged to it, others' CPU),
and the benchmark's rounds of runs: every concurrency for every system (order alternating between rounds),
then, per round, each system paced at half its peak and ours beside background stream traffic."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.gateway.loop_stalls import scrape, stalls_note
from bench.gateway.own_client import own_load
from bench.gateway.stack import Stack, start_background
from bench.gateway.target import Target
from bench.gateway.vegeta import vegeta_load
from bench.gateway.wrk import run_wrk, wrk_script
from bench.procstats import system_busy_seconds, tree_cpu_seconds, wait_quiet
from bench.report import fmt_num

__all__ = ["Run", "measure", "run_line", "run_rounds"]


@dataclass
class Run:
    """One measured run's figures (``round`` counts from 0)."""

    round: int
    system: str
    mode: str  # "wrk", "own", "paced", "vegeta", "half-peak", "background"
    connections: int
    decisions_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    undecided: int
    throttled: int | None
    cpu_ms_per_decision: float | None
    offered: float | None = None
    note: str = ""
    others_cpu: float | None = None  # % of a core used by processes the benchmark did not start


def _cpu(pids: list[int]) -> float:
    return sum(tree_cpu_seconds(pid) for pid in pids)


def _our_cpu() -> float:
    """CPU seconds of this process tree: live descendants plus children already reaped (wrk, the pacer)."""
    times = os.times()
    return tree_cpu_seconds(os.getpid()) + times.children_user + times.children_system


def measure(target: Target, mode: str, connections: int, args, tmp: Path, round_no: int,
            rate: float | None = None, say=print) -> Run:
    """One run of ``target`` at ``connections``: ``mode`` "wrk"/"background" by wrk after its warm-up, "vegeta"
    paced by vegeta at ``rate``, else the own client (paced at ``rate`` when given); decisions/s, latency, and the
    CPU charged to the target."""
    if args.quiet_wait > 0 and (share := wait_quiet(args.quiet_wait)) >= 15.0:
        say(f"[yellow]round {round_no + 1} {mode} c={connections} {target.name}: other processes still use "
            f"{share:.0f}% CPU[/yellow]")
    batch = args.batch or 0
    scale = batch or 1
    lag_before = scrape(target.lag_url)
    busy, ours, start_wall = system_busy_seconds(), _our_cpu(), time.perf_counter()
    if mode in ("wrk", "background"):
        script = _script(target, args, tmp)
        if args.warmup > 0:
            run_wrk(target, script, connections, args.warmup)
        before = _cpu(target.pids)
        raw = run_wrk(target, script, connections, args.seconds)
    else:  # vegeta and the own client count after their warm-up: charge the measured share of the call's CPU
        start_cpu, start = _cpu(target.pids), time.perf_counter()
        if mode == "vegeta":
            raw = vegeta_load(target, args.users, batch, connections, args.seconds, args.warmup, rate, args.seed, tmp)
        else:
            raw = own_load(target, args.users, batch, connections, args.seconds, args.warmup, rate, args.seed)
        share = min(1.0, args.seconds / max(1e-9, time.perf_counter() - start))
        before = _cpu(target.pids) - (_cpu(target.pids) - start_cpu) * share
    spent = _cpu(target.pids) - before
    wall = time.perf_counter() - start_wall
    stalls = stalls_note(lag_before, scrape(target.lag_url))  # the warm-up's ticks too (wrk's two seconds)
    others = 100.0 * ((system_busy_seconds() - busy) - (_our_cpu() - ours)) / wall if wall > 0 else None
    decisions = raw["decided_calls"] * scale - raw["undecided"]
    seconds = raw["seconds"] or args.seconds
    return Run(round_no, target.name, mode, connections, decisions / seconds, raw["p50_ms"], raw["p99_ms"],
               raw["errors"], raw["undecided"], raw["throttled_calls"],
               1000 * spent / decisions if decisions > 0 and target.pids else None, rate,
               "; ".join(filter(None, (f"send lag p99 {raw['send_lag_p99_ms']:.1f} ms"
                                       if raw.get("send_lag_p99_ms") is not None else "",
                                       f"{raw['unsent']:,} calls never sent (errors)" if raw.get("unsent") else "",
                                       stalls))),
               None if others is None else max(0.0, others))  # sampling noise can dip below 0


def run_line(run: Run) -> str:
    """One run in one line, printed as it finishes."""
    return (f"round {run.round + 1} {run.mode} c={run.connections} {run.system}: "
            f"{run.decisions_per_s:,.0f} decisions/s" + (f" (offered {run.offered:,.0f}/s)" if run.offered else "")
            + f", p50 {fmt_num(run.p50_ms, '.2f')} ms, p99 {fmt_num(run.p99_ms, '.2f')} ms, "
            f"CPU {fmt_num(run.cpu_ms_per_decision, '.3f')} ms/decision, errors {run.errors}, undecided "
            f"{run.undecided}" + (f", {run.throttled} throttled (429)" if run.throttled else "")
            + f", others' CPU {fmt_num(run.others_cpu)}%" + (f", {run.note}" if run.note else ""))


def _script(target: Target, args, tmp: Path) -> Path:
    """The wrk Lua script of ``target`` (written into ``tmp`` once)."""
    script = tmp / f"{target.name}-{args.batch or 0}.lua"
    if not script.exists():
        script.write_text(wrk_script(target, args.users, args.batch or 0, seed=args.seed))
    return script


def burn_in(targets: list[Target], connections: int, args, tmp: Path, progress: Progress, task) -> None:
    """Drive every target with wrk for ``--burn-in`` seconds, unmeasured, before the first round.

    A broker just started spends its first minute compiling its hot code: during the first rounds the JVM's
    C2 compiler thread took a quarter of a core (``top -H``), charged to ours, and round 1 was the slowest
    every time. A broker in service did that long ago; the peer (Go) has nothing to warm up.
    """
    for target in targets:
        progress.update(task, description=f"burn-in: {target.name}, {args.burn_in:g} s unmeasured")
        run_wrk(target, _script(target, args, tmp), connections, args.burn_in)


def run_rounds(args, targets: list[Target], stack: Stack, tmp: Path, console: Console) -> list[Run]:
    """Every run of ``--rounds`` rounds, each printed as it finishes, under a progress bar."""
    mode = "own" if args.load == "own" and not args.rate else "paced" if args.rate else "wrk"
    top = max(args.concurrency)
    per_round = len(targets) * len(args.concurrency) + len(targets) * args.half_peak + bool(args.background_rate)
    runs: list[Run] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("runs", total=args.rounds * per_round)
        if args.burn_in > 0 and args.load == "wrk":
            burn_in(targets, top, args, tmp, progress, overall)

        def record(run: Run) -> None:
            runs.append(run)
            progress.console.print(run_line(run))
            progress.advance(overall)

        for round_no in range(args.rounds):
            order = targets if round_no % 2 == 0 else targets[::-1]
            peaks: dict[str, float] = {}
            for connections in args.concurrency:
                for target in order:
                    progress.update(overall, description=f"round {round_no + 1}: {mode} c={connections} {target.name}")
                    run = measure(target, mode, connections, args, tmp, round_no, args.rate, progress.console.print)
                    record(run)
                    if connections == top:
                        peaks[target.name] = run.decisions_per_s / (args.batch or 1)
            if args.half_peak:
                for target in order:
                    if not peaks.get(target.name):
                        continue
                    rate = peaks[target.name] / 2
                    progress.update(overall, description=f"round {round_no + 1}: {target.name} paced at {rate:,.0f}/s")
                    paced = "vegeta" if args.paced_load == "vegeta" else "paced"
                    run = measure(target, paced, args.paced_connections, args, tmp, round_no, rate, progress.console.print)
                    run.mode, run.offered = "half-peak", rate * (args.batch or 1)
                    record(run)
            if args.background_rate:
                target = next(t for t in targets if t.name == "ours")
                progress.update(overall, description=f"round {round_no + 1}: ours c={top} with "
                                                     f"{args.background_rate:,.0f} events/s beside it")
                pacer = start_background(args, stack, tmp, args.warmup + args.seconds + 4, round_no)
                time.sleep(2.0)
                run = measure(target, "background", top, args, tmp, round_no, None, progress.console.print)
                pacer.wait(timeout=120)
                stack.processes.remove(pacer)
                try:
                    sent = json.loads((tmp / f"pacer-{round_no}.json").read_text().strip().splitlines()[-1])
                    pacer_note = f"background achieved {sent['achieved_rate']:,.0f} events/s"
                except (ValueError, IndexError, KeyError):
                    pacer_note = "background pacer output unreadable"
                run.note = "; ".join(filter(None, (pacer_note, run.note)))  # and the worker's stalls
                run.offered = args.background_rate
                record(run)
    return runs
