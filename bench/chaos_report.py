"""What the chaos soak shows: the live status during the run, and the tables and JSON at the end."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table

from bench.chaos_check import Verdict
from bench.faults import KINDS, Exit, Fault
from bench.report import machine
from streams.devkafka.broker import KAFKA_VERSION

__all__ = ["Status", "fault_stats", "run_facts", "tables", "write_summary"]


@dataclass
class Status:
    """Shared between the run loop and the display: the display only reads it."""

    phase: str = "starting"
    started: float = field(default_factory=time.time)
    faults_from: float | None = None
    planned: float = 0.0  # seconds of faults planned (--minutes)
    rate: float = 0.0
    load: dict = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    lag: int | None = None
    committed: int | None = None
    workers: str = ""
    next_fault: float | None = None
    observe: Callable[[], object] | None = None  # refreshes lag and workers before each render

    def render(self):
        if self.observe is not None:
            self.observe()
        now = time.time()
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        elapsed = now - (self.faults_from or now)
        grid.add_row("phase", f"{self.phase} ({now - self.started:,.0f} s since start; "
                              f"{min(elapsed, self.planned):,.0f} of {self.planned:,.0f} s of faults)")
        grid.add_row("offered", f"{self.rate:,.0f} events/s; sent {self.load.get('sent', 0):,}, "
                                f"acked {self.load.get('acked', 0):,}, failed {self.load.get('failed', 0):,}")
        grid.add_row("limiter", f"committed {self.committed or 0:,}, lag {'–' if self.lag is None else f'{self.lag:,}'}")
        grid.add_row("workers", self.workers + (f"; {len(self.exits)} exited on their own" if self.exits else ""))
        kinds = ", ".join(f"{kind} {sum(f.kind == kind for f in self.faults)}" for kind in KINDS)
        grid.add_row("faults", f"{len(self.faults)} ({kinds})"
                     + (f"; next in {self.next_fault - now:,.0f} s" if self.next_fault and self.next_fault > now else ""))
        if self.faults:
            last = self.faults[-1]
            state = ("in progress" if last.done is None else
                     f"recovered in {last.recovery:.1f} s" if last.recovery is not None else "waiting for recovery")
            grid.add_row("last fault", f"#{last.number} {last.kind} {last.target} at +{last.injected - (self.faults_from or 0):,.0f} s: "
                                       f"{state}")
        bar = ProgressBar(total=max(self.planned, 1.0), completed=min(elapsed, self.planned), width=60)
        return Group(grid, bar)


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def fault_stats(faults: list[Fault]) -> dict[str, dict]:
    """Per kind and ``all``: count, recovered, recovery p50 and max (s), action time p50 (s)."""
    out = {}
    for kind in (*KINDS, "all"):
        chosen = [f for f in faults if kind in ("all", f.kind)]
        recoveries = [f.recovery for f in chosen if f.recovery is not None]
        actions = [f.done - f.injected for f in chosen if f.done is not None]
        out[kind] = {
            "count": len(chosen), "recovered": len(recoveries),
            "recovery_p50_s": statistics.median(recoveries) if recoveries else None,
            "recovery_max_s": max(recoveries) if recoveries else None,
            "action_p50_s": statistics.median(actions) if actions else None,
        }
    return out


def tables(status: Status, verdict: Verdict | None, run: dict, problems: list[str]) -> list:
    """The end-of-run tables: run, faults by kind, every fault, checks, violations, exits."""
    out = []
    facts = Table("what", "value", title="Run")
    for key, value in run.items():
        facts.add_row(key, str(value))
    out.append(facts)

    by_kind = Table("fault", "injected", "recovered", "recovery p50 s", "recovery max s", "action p50 s",
                    title="Faults (recovery as defined in the Run table)")
    for kind, stats in fault_stats(status.faults).items():
        p50, worst, action = (_seconds(stats[key]) for key in ("recovery_p50_s", "recovery_max_s", "action_p50_s"))
        by_kind.add_row(kind, str(stats["count"]), str(stats["recovered"]), p50, worst, action)
    out.append(by_kind)

    each = Table("#", "at s", "kind", "target", "action s", "recovery s", "detail", title="Every fault")
    base = status.faults_from or status.started
    for f in status.faults:
        each.add_row(str(f.number), f"{f.injected - base:,.0f}", f.kind, f.target,
                     "–" if f.done is None else f"{f.done - f.injected:.1f}",
                     "not recovered" if f.recovery is None else f"{f.recovery:.1f}", f.detail)
    out.append(each)

    if verdict is not None:
        checks = Table("check", "figures", "violations", title="Checks (topics read read_committed)")
        checks.add_row("one committed decision per request",
                       f"{verdict.published:,} published, {verdict.decisions:,} decisions",
                       f"missing {verdict.missing:,}, duplicates {verdict.duplicates:,}, unknown {verdict.unknown:,}, "
                       f"stored twice {verdict.stored_twice:,}")
        checks.add_row("allowed <= limit per (user, window)",
                       f"{verdict.user_windows:,} (user, window) pairs; verdicts {verdict.verdicts}",
                       f"{verdict.over_limit:,} over the limit")
        checks.add_row("abuse reports count every request once",
                       f"{verdict.windows_compared} windows compared (fully inside the run: the first and the last "
                       f"are left out), {verdict.reports} reports; "
                       f"{verdict.windows_reported_twice} windows with a partition reported again, "
                       f"{verdict.windows_forced} forced",
                       f"{verdict.windows_mismatched} wrong, {verdict.windows_unreported} unreported")
        out.append(checks)
        if verdict.violations:
            found = Table("kind", "count", "evidence (first ones)", title="Violations")
            for kind, lines in verdict.violations.items():
                found.add_row(kind, f"{len(lines):,}", "\n".join(lines[:10]))
            out.append(found)
    if status.exits:
        exits = Table("worker", "pid", "code", "at s", "why (its log)", title="Workers that exited on their own (restarted)")
        for e in status.exits:
            exits.add_row(e.worker, str(e.pid), str(e.code), f"{e.wall - base:,.0f}", e.reason)
        out.append(exits)
    if problems:
        found = Table("problem", title="Problems")
        for problem in problems:
            found.add_row(problem)
        out.append(found)
    return out


def run_facts(args, command: str, bound: int, final: dict, restarts: int, code_at_start: str) -> dict[str, str]:
    """The Run table: what was offered, the recovery definition, the machine and the code."""
    run = {
        "command": command,
        "offered rate": f"{args.rate:,.0f} events/s (achieved {final.get('achieved_rate', 0):,.0f})",
        "load": f"{final.get('seconds', 0):,.0f} s, {final.get('sent', 0):,} events, {args.users} users",
        "limit": f"{args.limit} per {args.window:g} s, fixed",
        "recovery": f"injection -> first moment from which, for {args.stable:g} s on end, every request published "
                    f"before the fault's last action is decided and committed, the lag is at most {bound:,} requests "
                    f"({args.lag_bound:g} s of load) and the limiter group is stable with all {args.workers} workers",
        "workers": f"{args.workers}, all roles, exactly_once, {restarts} restarts",
        **dict(machine(f"Apache Kafka {KAFKA_VERSION}, LocalKafka (private home)")),
    }
    if run["code"] != code_at_start:
        run["code"] = f"{code_at_start} at the start, {run['code']} at the end"
    return run


def write_summary(path: Path, run: dict, args, status: Status, load: dict, problems: list[str],
                  verdict: Verdict | None) -> None:
    summary = {
        "run": run,
        "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k != "summary"},
        "faults": [f.as_dict() for f in status.faults], "fault_stats": fault_stats(status.faults),
        "exits": [e.__dict__ for e in status.exits], "load": load, "problems": problems,
        "verdict": None if verdict is None else verdict.as_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))
