"""The rate limit service benchmark's report: one row per run, medians and spread per system, Markdown.

Kept apart from ``bench/rls_bench.py`` (which starts the systems and drives ghz) so the pure part
is small and unit-tested (``tests/unit/test_rls_bench_parse.py``).
"""

from typing import NamedTuple

from bench.peers.go_tools import GhzResult
from bench.report import fmt_num, machine, markdown_table, median_of, spread

__all__ = ["EVERY", "SUMMARY", "Run", "every_row", "markdown_section", "summarize"]


class Run(NamedTuple):
    round: int
    system: str
    result: GhzResult
    service_cpu_ms_per_call: float | None
    ghz_cpu_percent: float | None


SUMMARY = ["system", "requests/s median (min–max)", "ours ÷ peer", "p50 ms", "p99 ms", "service CPU ms/call",
           "ghz CPU %", "errors", "runs"]
EVERY = ["round", "system", "calls", "requests/s", "p50 ms", "p99 ms", "errors (cut at end)", "service CPU ms/call",
         "ghz CPU %"]


def summarize(runs: list[Run]) -> list[list[str]]:
    rows, rates = [], {s: median_of([r.result.rps for r in runs if r.system == s]) for s in ("ours", "peer")}
    for system in [s for s in ("ours", "peer") if any(r.system == s for r in runs)]:
        group = [r for r in runs if r.system == system]
        both = system == "ours" and rates["ours"] and rates["peer"]
        ratio = f"{rates['ours'] / rates['peer']:.2f}×" if both else "–"
        rows.append([system, spread([r.result.rps for r in group], ",.0f"), ratio,
                     spread([r.result.p50_ms for r in group], ".2f"), spread([r.result.p99_ms for r in group], ".2f"),
                     spread([r.service_cpu_ms_per_call for r in group], ".3f"),
                     spread([r.ghz_cpu_percent for r in group], ".0f"), str(sum(r.result.errors for r in group)),
                     str(len(group))])
    return rows


def every_row(r: Run) -> list[str]:
    return [str(r.round + 1), r.system, f"{r.result.count:,}", fmt_num(r.result.rps), fmt_num(r.result.p50_ms, ".2f"),
            fmt_num(r.result.p99_ms, ".2f"), f"{r.result.errors} ({r.result.cut})",
            fmt_num(r.service_cpu_ms_per_call, ".3f"),
            fmt_num(r.ghz_cpu_percent, ".0f")]


def markdown_section(command: str, facts: list[tuple[str, str]], runs: list[Run]) -> str:
    here = dict(machine(""))
    lines = [f"Run of {here['date']}", "", "```", command, "```", ""]
    lines += [f"- {name}: {here[name]}" for name in ("machine", "load average at end", "Python", "code")]
    lines += [f"- {name}: {value}" for name, value in facts]
    lines += ["", markdown_table(SUMMARY, summarize(runs)), "", "Every run:", "",
              markdown_table(EVERY, [every_row(r) for r in runs]), ""]
    return "\n".join(lines)
