"""Summaries of the runs: one row per implementation, as a rich table and as Markdown."""

from __future__ import annotations

import os
import platform
import statistics
from datetime import datetime, timezone
from importlib import metadata

from rich.table import Table

from bench.runner import RunResult

__all__ = ["HEADERS", "agreement", "fmt_num", "machine", "markdown", "markdown_table", "median_of", "rich_table", "spread",
           "summary_rows"]

HEADERS = ["implementation", "events", "decisions/s median (min–max)", "ratewarden ÷ this", "worker CPU", "peak RSS MiB",
           "offered (achieved) /s", "p50 / p95 / p99 ms", "live CPU", "dup / missing"]


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_num(value, fmt: str = ",.0f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{fmt}}{suffix}"


def spread(values, fmt: str = ",.0f") -> str:
    """The median of ``values`` (None left out), with (min–max) when there are several; "–" when none."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return fmt_num(median_of(values), fmt) + (f" ({min(values):{fmt}}–{max(values):{fmt}})" if len(values) > 1 else "")


def summary_rows(results: list[RunResult], labels: dict[str, str]) -> list[list[str]]:
    """One row per implementation (in ``labels`` order); the ratio is the first one's median rate over its own."""
    rows, base = [], None
    for key, label in labels.items():
        runs = [r for r in results if r.impl == key]
        if not runs:
            continue
        rates = [r.rate for r in runs if r.rate]
        median = median_of(rates)
        base = median if base is None else base
        spread = f" ({min(rates):,.0f}–{max(rates):,.0f})" if len(rates) > 1 else ""
        lat = [median_of([r.latency_ms.get(q) for r in runs]) for q in ("p50", "p95", "p99")]
        dup = sum(r.duplicates + r.live_duplicates for r in runs)
        miss = sum(r.missing + r.live_missing for r in runs)
        rows.append([
            label,
            f"{runs[0].events:,} ×{len(runs)}",
            fmt_num(median) + spread,
            f"{base / median:.2f}×" if base and median else "–",
            fmt_num(median_of([r.cpu for r in runs]), ".0f", "%"),
            fmt_num(median_of([r.rss_mib for r in runs]), ".0f"),
            f"{fmt_num(median_of([r.offered for r in runs]))} ({fmt_num(median_of([r.achieved for r in runs]))})",
            " / ".join(fmt_num(v) for v in lat),
            fmt_num(median_of([r.live_cpu for r in runs]), ".0f", "%"),
            f"{dup} / {miss}",
        ])
    return rows


def rich_table(rows: list[list[str]], title: str) -> Table:
    table = Table(*HEADERS, title=title)
    for row in rows:
        table.add_row(*row)
    return table


def per_run_rows(results: list[RunResult]) -> list[list[str]]:
    """Every run, for the record."""
    out = []
    for r in sorted(results, key=lambda r: (r.round, r.impl)):
        lat = " / ".join(fmt_num(r.latency_ms.get(q)) for q in ("p50", "p95", "p99"))
        out.append([str(r.round + 1), r.impl, f"{r.events:,}", fmt_num(r.rate), fmt_num(r.cpu, ".0f", "%"),
                    fmt_num(None if r.other_cpu is None else max(0.0, r.other_cpu), ".0f", "%"),  # noise can dip below 0
                    fmt_num(r.rss_mib, ".0f"), fmt_num(r.startup_s, ".1f", " s"), f"{fmt_num(r.offered)} ({fmt_num(r.achieved)})",
                    lat, " / ".join(fmt_num(r.produce_ack_ms.get(q), ".0f") for q in ("p50", "p99")),
                    f"{r.duplicates}/{r.missing}, {r.live_duplicates}/{r.live_missing}"])
    return out


PER_RUN_HEADERS = ["round", "impl", "events", "decisions/s", "CPU", "other procs CPU", "RSS MiB", "first decision after",
                   "offered (achieved) /s", "p50 / p95 / p99 ms", "produce ack p50 / p99 ms",
                   "dup/miss backlog, live"]


def agreement(results: list[RunResult], a: str, b: str) -> list[str]:
    """Per round: do ``a`` and ``b`` give the same verdict on the backlog requests both decided?"""
    lines = []
    for round_no in sorted({r.round for r in results}):
        ra = next((r for r in results if r.round == round_no and r.impl == a), None)
        rb = next((r for r in results if r.round == round_no and r.impl == b), None)
        if not ra or not rb:
            continue
        common = ra.verdicts.keys() & rb.verdicts.keys()
        differ = sum(1 for k in common if ra.verdicts[k] != rb.verdicts[k])
        throttled = sum(1 for k in common if ra.verdicts[k] == "throttle")
        lines.append(f"round {round_no + 1}: {a} and {b} agree on {len(common) - differ:,} of {len(common):,} "
                     f"common backlog requests ({throttled:,} throttled by {a})")
    return lines


def _meminfo_gib() -> str:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "?"


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _git() -> str:
    """The commit the benchmark ran on, and whether the tree had uncommitted changes."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}" + (" with uncommitted changes" if dirty else "")


def machine(kafka: str) -> list[tuple[str, str]]:
    versions = ", ".join(f"{name} {metadata.version(name)}"
                         for name in ("faust-streaming", "aiokafka", "kafka-python", "rocksdict", "msgspec"))
    return [
        ("date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", f"{os.cpu_count()} CPUs (nproc), {_meminfo_gib()} RAM, {_cpu_model()}"),
        ("load average at end", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("Python", f"{platform.python_implementation()} {platform.python_version()} on {platform.system()}"),
        ("Kafka", kafka),
        ("code", _git()),
        ("libraries", versions),
    ]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(command: str, facts: list[tuple[str, str]], rows: list[list[str]], results: list[RunResult],
             notes: dict[str, str], extra: list[str]) -> str:
    """A self-contained Markdown section for one benchmark invocation."""
    parts = [f"## Run of {facts[0][1]}", "", "```", command, "```", ""]
    parts += [f"- {name}: {value}" for name, value in facts]
    parts += ["", markdown_table(HEADERS, rows), "", "Settings:", ""]
    parts += [f"- **{label}**: {text}" for label, text in notes.items()]
    parts += ["", "Every run:", "", markdown_table(PER_RUN_HEADERS, per_run_rows(results)), ""]
    parts += [f"- {line}" for line in extra]
    return "\n".join(parts) + "\n"
