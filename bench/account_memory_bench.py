"""Account memory benchmark: is agents.account_memory.AccountMemory bounded with churning accounts?

    .venv/bin/python bench/account_memory_bench.py [--events 1000000] [--png PATH]

A steady population of ``--steady`` accounts (uniformly active) and a stream of throwaway accounts
(a ``--throwaway`` share of the events; each has one event and never comes back) make ``--per-window``
events per ``--window`` s of event time. Each closed window's distinct accounts go to
``AccountMemory.add_window``; beside it an exact reference (account -> last window) says which
accounts were truly new, that is in no live generation, so the false-positive rate (truly new
accounts reported as seen) and the false negatives (seen accounts reported new: must be 0) are
measured. Every ``--every`` windows a row shows: the filters' ``nbytes``; the memory object's data
measured with tracemalloc (a deep copy made under tracing); the size of an exact set of every
account seen so far, measured the same way (a copy of the set with fresh strings); and the process
RSS (which includes the exact reference this script keeps, so it grows too). A script, not a test.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from agents.account_memory import AccountMemory  # noqa: E402
from bench.procstats import status_mib  # noqa: E402

T0 = 1_733_011_200.0  # midnight UTC: a multiple of every span used here


def traced_bytes(make) -> int:
    """Bytes still allocated (tracemalloc, every domain) by ``make()`` while its result is alive."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()  # noqa: F841 (held while measuring)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--window", type=float, default=60.0, help="window length, s of event time")
    parser.add_argument("--per-window", type=int, default=1_000, help="events per window")
    parser.add_argument("--steady", type=int, default=20_000, help="accounts of the steady population")
    parser.add_argument("--throwaway", type=float, default=0.4, help="share of events by one-event accounts")
    parser.add_argument("--capacity", type=int, default=20_000, help="accounts per generation")
    parser.add_argument("--error-rate", type=float, default=0.01)
    parser.add_argument("--span", type=float, default=900.0, help="generation length, s of event time")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--every", type=int, default=50, help="a table row every this many windows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--png", type=Path, help="also draw memory over events (needs matplotlib)")
    args = parser.parse_args()
    console = Console()
    memory = AccountMemory(args.capacity, args.error_rate, args.span, args.generations)
    windows = math.ceil(args.events / args.per_window)
    console.print(f"{args.events:,} events in {windows:,} windows of {args.window:g} s ({windows * args.window / 3600:.1f} h "
                  f"of event time); {args.steady:,} steady accounts, {args.throwaway:.0%} of events by throwaway accounts")
    console.print(f"AccountMemory(capacity={args.capacity:,}, error_rate={args.error_rate}, span={args.span:g}, "
                  f"generations={args.generations}): {memory.bits:,} bits, {memory.hashes} hashes, "
                  f"{(memory.bits + 7) // 8:,} bytes per generation; remembers {args.generations * args.span / 3600:g} h, "
                  f"{windows * args.window / (args.generations * args.span):.1f} expiry cycles in the run")
    rng = np.random.default_rng(args.seed)
    steady = [f"user-{i:06d}" for i in range(args.steady)]
    reference: dict[str, float] = {}  # the exact reference: account -> end of its last window
    table = Table("windows", "events", "accounts so far", "live filters", "ours nbytes", "ours traced",
                  "exact set traced", "RSS MiB", "truly new (since last row)", "reported seen (FP rate)",
                  "false neg.", "saturated")
    rows: list[tuple[int, int, int, int, int]] = []
    events = throwaways = fresh = false_pos = false_neg = all_fresh = all_false_pos = distinct = 0
    folding = 0.0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("windows", total=args.events)
        for w in range(windows):
            at = T0 + args.window * (w + 1)
            n = min(args.per_window, args.events - events)
            once = int(rng.binomial(n, args.throwaway))
            accounts = {steady[i] for i in rng.integers(0, args.steady, n - once)}
            accounts.update(f"throwaway-{throwaways + i:08d}" for i in range(once))
            throwaways, events, distinct = throwaways + once, events + n, distinct + len(accounts)
            live_from = math.floor(at / args.span) - args.generations + 1
            truly_new = {a for a in accounts if a not in reference or math.floor(reference[a] / args.span) < live_from}
            started = time.perf_counter()
            reported_new = memory.add_window(accounts, at)
            folding += time.perf_counter() - started
            fresh, false_pos = fresh + len(truly_new), false_pos + len(truly_new - reported_new)
            false_neg += len(reported_new - truly_new)
            reference.update(dict.fromkeys(accounts, at))
            progress.advance(task, n)
            if (w + 1) % args.every and w + 1 < windows:
                continue
            ours = traced_bytes(lambda: copy.deepcopy(memory))
            exact = traced_bytes(lambda: {a.encode().decode() for a in reference})
            rows.append((events, memory.nbytes, ours, exact, len(reference)))
            table.add_row(f"{w + 1:,}", f"{events:,}", f"{len(reference):,}", str(memory.nbytes // ((memory.bits + 7) // 8)),
                          f"{memory.nbytes:,}", f"{ours:,}", f"{exact:,}", f"{status_mib(os.getpid(), 'VmRSS') or 0:.0f}",
                          f"{fresh:,}", f"{false_pos:,} ({false_pos / max(fresh, 1):.2%})", f"{false_neg:,}",
                          f"{memory.saturated:,}")
            all_fresh, all_false_pos, fresh, false_pos = all_fresh + fresh, all_false_pos + false_pos, 0, 0
    console.print(table)
    console.print(f"add_window: {folding:.2f} s for {distinct:,} distinct accounts in windows, "
                  f"{folding / max(distinct, 1) * 1e6:.2f} µs per account")
    console.print(f"false-positive rate over the run: {all_false_pos:,} of {all_fresh:,} truly new accounts reported "
                  f"as seen ({all_false_pos / max(all_fresh, 1):.2%}); false negatives: {false_neg}")
    peak_ours = max(r[2] for r in rows)
    console.print(f"bounded at {peak_ours / 1e3:,.0f} KB (traced; filters {max(r[1] for r in rows) / 1e3:,.0f} KB) after "
                  f"{events:,} events; an exact set grows to {rows[-1][3] / 1e6:,.1f} MB ({rows[-1][4]:,} accounts)")
    if args.png:
        draw(args.png, rows)
        console.print(f"chart: {args.png}")
    return 0 if false_neg == 0 else 1


def draw(path: Path, rows: list[tuple[int, int, int, int, int]]) -> None:
    """Memory over events, ours against an exact set, into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = [r[0] for r in rows]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(events, [r[2] / 1e6 for r in rows], label="AccountMemory (tracemalloc)")
    axes.plot(events, [r[3] / 1e6 for r in rows], label="exact set of accounts seen (tracemalloc)")
    axes.set_xlabel("events")
    axes.set_ylabel("MB")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
