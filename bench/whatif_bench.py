"""What-if replay over a million recorded events, end to end (files read, decided, compared, written).

    .venv/bin/python bench/whatif_bench.py [--events 1000000] [--users 1000] [--dir var/whatif-bench]

Synthesizes the recording first (not timed): the benchmark workload's users and skew (``bench.workload``),
four request types, an event every millisecond; limits in force of every algorithm (most users on the
default, 100 per 60 s fixed); 10 addresses banned for 30% of the span and one user from 12% on, their
requests blocked; the decisions made by the what-if core itself (``agents.whatif.Replayer``, the limiter's
functions) and written as ``replay --out`` writes them. Then runs ``ratewarden whatif`` over the files,
with the limits in force (every verdict must be reproduced) and with a candidate (one heavy user's limit
lowered and a lower default): in this process for the time per phase, and as the command in a process of
its own for the wall time a user sees. No broker is involved.
"""

import argparse
import os
import random
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.whatif import BLOCK_REASONS, Replayer  # noqa: E402
from bench.workload import STEP, Workload, user_name  # noqa: E402
from ratewarden.replay import write_decisions, write_trace  # noqa: E402
from ratewarden.whatif import run_whatif  # noqa: E402
from ratewarden.whatif_inputs import from_files, new_book, parse_set, read_limits_file  # noqa: E402
from ratewarden.whatif_report import draw_charts  # noqa: E402, F401 - pandas and matplotlib imported before the clock
from schemas.events import RequestEvent  # noqa: E402
from schemas.limits import RateLimit  # noqa: E402

T0 = 1_732_900_020.0
TYPES = ("read", "read", "read", "search", "write", "login")
DEFAULT = RateLimit(user_id="*", limit=100, window=60)


def synthesize(n: int, users: int, seed: int = 7) -> tuple[list[RequestEvent], list[RateLimit], dict[str, str]]:
    """Events, the limits in force and the block reasons the limiter applied (by request_id)."""
    rng = random.Random(seed)
    sequence = Workload(users, seed).user_sequence(n, seed)
    types = [rng.choice(TYPES) for _ in range(n)]
    ips = [f"10.{(u >> 8) & 255}.{u & 255}.{1 + u % 3}" for u in range(users)]
    events = [RequestEvent(f"w-{i:08d}", user_name(u), ips[u], kind, round(T0 + i * STEP, 3))
              for i, (u, kind) in enumerate(zip(sequence, types))]
    limits = []
    for u in rng.sample(range(users), 60):
        algorithm = ("sliding", "gcra", "fixed")[u % 3]
        limits.append(RateLimit(user_id=user_name(u), limit=rng.choice((50, 150, 300)), window=60, algorithm=algorithm,
                                burst=10 if algorithm == "gcra" else None))
        if u % 4 == 0:
            limits.append(RateLimit(user_id=user_name(u), request_type="login", limit=5, window=60))
    banned_ips = {ips[u] for u in rng.sample(range(users), 10)}
    banned_user = user_name(rng.randrange(users))
    span = n * STEP
    lo, hi, user_from = T0 + 0.3 * span, T0 + 0.6 * span, T0 + 0.12 * span
    blocks = {}
    for e in events:
        if e.ip in banned_ips and lo <= e.ts < hi:
            blocks[e.request_id] = "ip_blocked"
        elif e.user_id == banned_user and e.ts >= user_from:
            blocks[e.request_id] = "user_blocked"
    return events, limits, blocks


def record(directory: Path, n: int, users: int, console: Console) -> tuple[dict[str, Path], str]:
    """Write the recording; return the files and the busiest user."""
    started = time.perf_counter()
    events, limits, blocks = synthesize(n, users)
    decisions = Replayer(new_book(DEFAULT, limits), blocks).decisions(events)
    assert all(d is not None and (d.verdict != "block" or d.reason in BLOCK_REASONS) for d in decisions)
    paths = {name: directory / f"{name}.jsonl" for name in ("trace", "decisions", "limits")}
    write_trace(paths["trace"], events)
    write_decisions(paths["decisions"], decisions)
    paths["limits"].write_bytes(b"".join(msgspec.json.encode(x) + b"\n" for x in limits))
    throttled = sum(d.verdict == "throttle" for d in decisions)
    console.print(f"recording: {n:,} events of {users:,} users, {len(limits)} limits in force, {len(blocks):,} blocked, "
                  f"{throttled:,} throttled; made in {time.perf_counter() - started:.1f} s "
                  f"({sum(p.stat().st_size for p in paths.values()) / 2**20:.0f} MiB of files)")
    return paths, Counter(e.user_id for e in events).most_common(1)[0][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--dir", default="var/whatif-bench")
    args = parser.parse_args()
    console = Console(width=160)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths, heavy = record(directory, args.events, args.users, console)
    changes = [parse_set(f"{heavy}=40/60")]
    candidate_default = RateLimit(user_id="*", limit=80, window=60)
    base_cli = [sys.executable, "-m", "ratewarden.cli", "whatif", "--trace", str(paths["trace"]),
                "--decisions", str(paths["decisions"]), "--in-force", str(paths["limits"])]
    scenarios = {
        "limits in force": (new_book(DEFAULT, read_limits_file(paths["limits"])), False, []),
        f"candidate: {heavy}=40/60, default 80/60": (
            new_book(candidate_default, read_limits_file(paths["limits"]), changes), True,
            ["--set", f"{heavy}=40/60", "--default", "80/60"]),
    }
    table = Table("scenario", "read", "decide", "compare", "print", "tables", "charts", "total (in process)",
                  "events/s", "command wall", "changed", title=f"ratewarden whatif over {args.events:,} recorded events")
    quiet = Console(file=open(os.devnull, "w"))
    for name, (book, is_candidate, flags) in scenarios.items():
        out = directory / ("out-candidate" if is_candidate else "out-in-force")
        source = partial(from_files, paths["trace"], paths["decisions"], None)
        started = time.perf_counter()
        run = run_whatif(source, book, out, quiet, show_progress=False, is_candidate=is_candidate)
        total = time.perf_counter() - started
        if not is_candidate:
            assert run.diff.reproduced == run.diff.total == args.events, (run.diff.reproduced, run.diff.total)
        started = time.perf_counter()
        command = subprocess.run([*base_cli, *flags, "--out", str(out)], capture_output=True, text=True)
        wall = time.perf_counter() - started
        assert command.returncode == 0, command.stdout + command.stderr
        t = run.timings
        table.add_row(name, *(f"{t[p]:.2f} s" for p in ("read", "decide", "compare", "print", "tables", "charts")),
                      f"{total:.2f} s", f"{args.events / total:,.0f}", f"{wall:.2f} s",
                      f"{run.diff.total - run.diff.reproduced:,}")
        console.print(next(line for line in command.stdout.splitlines() if line.strip()))
    console.print(table)
    console.print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
                  f"Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
