"""What ``RATEWARDEN_BAN_TIMING=event_time`` costs, side by side with ``arrival``, in alternating rounds.

    .venv/bin/python bench/ban_timing_bench.py [--rounds 3] [--speed 8]

One simulated attack trace (12 minutes of event time, 800 users: floods, stuffing, scrapers,
rotations) goes through a fresh default worker (limiter, history, analytics) per run, on a local
broker, in two ways per mode and round:

- **replay**: published at full speed (``ratewarden replay``): wall seconds from the first publish to
  the last decision, and whether the mode's runs give identical verdicts;
- **paced**: published as event time passes ``--speed`` times faster than the wall clock (a live
  service, sped up): per decision, the wall seconds from its publish to its decision (``ts_decided``),
  p50/p99/max — what a live caller would wait — and the worker's ban-gate waits and timeouts.

The table gives medians over rounds with their spread (min–max); figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.commands import interrupt_on_signals  # noqa: E402
from bench.metrics_page import read_page  # noqa: E402
from ratewarden.client import DecisionSubscriber, RequestPublisher  # noqa: E402
from ratewarden.processes import start_worker, stop_process  # noqa: E402
from ratewarden.replay import replay  # noqa: E402
from ratewarden.simulate import simulate  # noqa: E402
from streams.devkafka.broker import LocalKafka  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

MODES = ("arrival", "event_time")
METRICS_PORT = 9191


def gate_metrics() -> tuple[float, float, float]:
    """(gate waits, seconds waited, timeouts) from the worker's metrics."""
    page = read_page(f"http://127.0.0.1:{METRICS_PORT}/metrics")
    return (page.total("ratewarden_ban_gate_wait_seconds_count"), page.total("ratewarden_ban_gate_wait_seconds_sum"),
            page.total("ratewarden_ban_gate_timeouts_total"))


def paced(settings: Settings, events, speed: float) -> tuple[list[float], dict[str, tuple[str, str]]]:
    """Publish as event time passes ``speed`` x the wall clock; the publish-to-decision seconds of every event,
    and the verdict and reason per request."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    verdicts: dict[str, tuple[str, str]] = {}
    with RequestPublisher(settings) as publisher, DecisionSubscriber(settings) as subscriber:
        started, ts0, i = time.monotonic(), events[0].ts, 0
        while len(latencies) < len(events):
            due = ts0 + (time.monotonic() - started) * speed
            while i < len(events) and events[i].ts <= due:
                sent[events[i].request_id] = time.time()
                publisher.publish(events[i])
                i += 1
            publisher.flush()
            for decision in subscriber.poll(0.02):
                at = sent.pop(decision.request_id, None)
                if at is not None:
                    latencies.append(decision.ts_decided - at)
                    verdicts[decision.request_id] = (decision.verdict, decision.reason)
            if time.monotonic() - started > (events[-1].ts - ts0) / speed + 300:
                raise TimeoutError(f"{len(events) - len(latencies)} events undecided")
    return latencies, verdicts


def run(bootstrap: str, home: Path, mode: str, how: str, sim, speed: float) -> dict:
    settings = Settings(kafka_bootstrap_servers=bootstrap, var_dir=home / uuid.uuid4().hex[:6], partitions=4,
                        default_limit=100, ban_timing=mode, allowlist_cidrs=",".join(sim.labels["allowlist"]),
                        ).scoped(uuid.uuid4().hex[:6])
    ensure_topics(settings)
    worker = start_worker(settings, home / f"{settings.app_id}.log", loglevel="warning", metrics_port=METRICS_PORT)
    try:
        started = time.monotonic()
        if how == "replay":
            decisions = replay(sim.events, settings, timeout=900, show_progress=False)
            out = {"seconds": time.monotonic() - started, "verdicts": {d.request_id: (d.verdict, d.reason) for d in decisions}}
        else:
            latencies, verdicts = paced(settings, sim.events, speed)
            latencies.sort()
            out = {"p50": latencies[len(latencies) // 2], "p99": latencies[int(len(latencies) * 0.99)],
                   "max": latencies[-1], "verdicts": verdicts}
        out["waits"], out["waited"], out["timeouts"] = gate_metrics()
        return out
    finally:
        stop_process(worker, 60)


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main() -> int:
    interrupt_on_signals()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--speed", type=float, default=8.0, help="paced runs: seconds of event time per wall second")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 200))
    sim = simulate(minutes=12, users=800, seed=7)
    home = Path(tempfile.mkdtemp(prefix="rw-bantiming-"))
    broker = LocalKafka(home / "kafka")
    results: dict[tuple[str, str], list[dict]] = {(m, h): [] for m in MODES for h in ("replay", "paced")}
    try:
        bootstrap = broker.start()
        with Progress(console=console) as progress:
            task = progress.add_task("runs", total=args.rounds * len(results))
            for round_ in range(args.rounds):
                for mode in MODES if round_ % 2 == 0 else MODES[::-1]:  # alternate who goes first
                    for how in ("replay", "paced"):
                        progress.update(task, description=f"round {round_ + 1}: {mode} {how}")
                        results[(mode, how)].append(run(bootstrap, home, mode, how, sim, args.speed))
                        progress.advance(task)
    finally:
        broker.stop()
    table = Table("ban timing", "run", "wall s", "blocked requests", "verdicts differing from round 1",
                  "p50 s", "p99 s", "max s", "gate waits", "s waited", "timeouts",
                  title=f"{len(sim.events):,} events, {args.rounds} rounds alternating, replay at full speed and paced at "
                        f"{args.speed:g}x (latency: publish to decision); median (min–max)")
    for mode in MODES:
        for how in ("replay", "paced"):
            runs = results[(mode, how)]
            first = runs[0]["verdicts"]
            differing = [sum(r["verdicts"].get(k) != v for k, v in first.items()) for r in runs[1:]]
            blocked = [sum(v[0] == "block" for v in r["verdicts"].values()) for r in runs]
            cells = ([spread([r["seconds"] for r in runs], "{:.1f}")] if how == "replay" else ["—"])
            cells += [spread(blocked, "{:,.0f}"), ", ".join(f"{d:,}" for d in differing)]
            cells += ([spread([r[q] for r in runs], "{:.3f}") for q in ("p50", "p99", "max")] if how == "paced"
                      else ["—"] * 3)
            cells += [spread([r["waits"] for r in runs], "{:.0f}"), spread([r["waited"] for r in runs], "{:.1f}"),
                      str(int(sum(r["timeouts"] for r in runs)))]
            table.add_row(mode, how, *cells)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
