"""Soak run: 1,000,000 events with churning users through one worker; is memory flat?

    .venv/bin/python bench/soak.py [--events 1000000] [--active 2000] [--phase 50000] [--event-rate 1000]

The memory run (100,000 users, every one of them active in every 60 s window)::

    .venv/bin/python bench/soak.py --events 400000 --active 100000 --phase 400000 --event-rate 2000

Users churn: every ``--phase`` events a fresh set of ``--active`` users takes over, so the number
of users ever seen grows with the run (20 x 2,000 = 40,000 by default) while the number of
*active* users stays constant. Event time runs at ``--event-rate`` events per second (60 s windows),
so old users' counters expire three windows after they go quiet; at 2,000 events/s a window holds
120,000 events, so 100,000 round-robin users are each active in every window. Every 100,000 events the table shows the
worker's RSS, the RocksDB state size on disk (all of it, and the request history's directory alone) and the live
counters (from the worker's metrics).
A flat RSS and state size after warm-up is the pass criterion; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.commands import interrupt_on_signals  # noqa: E402
from bench.metrics_page import read_page  # noqa: E402
from bench.procstats import status_mib  # noqa: E402
from ratewarden.client import RequestPublisher  # noqa: E402
from ratewarden.processes import start_worker, stop_process  # noqa: E402
from schemas.events import RequestEvent  # noqa: E402
from streams.devkafka.broker import LocalKafka  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402


def dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def metric(port: int, name: str) -> float:
    return read_page(f"http://127.0.0.1:{port}/metrics").total(name)


def main() -> int:
    interrupt_on_signals()  # SIGTERM/SIGHUP -> the same clean-up as Ctrl-C: stop the worker and broker
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--active", type=int, default=2_000)
    parser.add_argument("--phase", type=int, default=50_000)
    parser.add_argument("--event-rate", type=float, default=1000.0, help="events per second of event time")
    parser.add_argument("--metrics-port", type=int, default=9187)
    parser.add_argument("--history-age", type=float, default=0.0,
                        help="also run the request history with this retention (s of event time); 0: history off")
    args = parser.parse_args()
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="rw-soak-"))
    broker = LocalKafka(home / "kafka")
    worker = None
    try:
        bootstrap = broker.start()
        settings = Settings(
            kafka_bootstrap_servers=bootstrap, var_dir=home, analytics_enabled=False,
            history_enabled=args.history_age > 0, history_max_age=args.history_age or 86_400.0,
        ).scoped(uuid.uuid4().hex[:6])
        ensure_topics(settings)
        log = home / "worker.log"
        worker = start_worker(settings, log, loglevel="warning", metrics_port=args.metrics_port)
        table = Table("events", "users seen", "worker RSS MiB", "RocksDB MiB (all state)", "history MiB", "live counters",
                      "events/s",
                      title=f"history {'off' if not args.history_age else f'on, {args.history_age:g} s retention'}")
        start_ts, t0 = 1_732_900_000.0, time.monotonic()
        with RequestPublisher(settings) as publisher:
            step = 100_000
            for chunk_start in range(0, args.events, step):
                for i in range(chunk_start, min(args.events, chunk_start + step)):
                    user = (i // args.phase) * args.active + i % args.active
                    publisher.publish(RequestEvent(f"s{i}", f"u{user}", "198.51.100.7", "read", start_ts + i / args.event_rate))
                publisher.flush()
                done = chunk_start + step
                while True:
                    try:
                        consumed = metric(args.metrics_port, "ratewarden_events_in_total")
                    except OSError:
                        consumed = 0
                    if consumed >= done:
                        break
                    time.sleep(0.2)
                time.sleep(1.2)  # one flush interval, so expiry and RocksDB writes of this chunk are in
                last = min(done, args.events) - 1  # users are i % active within each phase
                seen = (last // args.phase) * args.active + min(args.active, last % args.phase + 1)
                table.add_row(
                    f"{done:,}", f"{seen:,}", f"{status_mib(worker.pid, 'VmRSS') or 0:.0f}", f"{dir_mib(settings.var_dir):.1f}",
                    f"{dir_mib(settings.var_dir / 'history'):.1f}",
                    f"{metric(args.metrics_port, 'ratewarden_window_counters'):,.0f}",
                    f"{done / (time.monotonic() - t0):,.0f}",
                )
                console.print(f"{done:,} events decided")
        console.print(table)
        console.print(f"worker peak RSS (VmHWM): {status_mib(worker.pid, 'VmHWM') or 0:.0f} MiB; "
                      f"{args.events:,} events, {args.active:,} active users, event time {args.event_rate:g} events/s")
        return 0
    finally:
        if worker is not None:
            stop_process(worker)
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
