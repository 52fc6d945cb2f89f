"""``make demo``: a real broker, a worker, a synthetic trace replayed, a summary; then stop all.

Everything runs in ``var/demo`` (wiped first, so state is fresh) on free loopback ports. Whatever
the demo started is stopped by its own PID, also when it fails.
"""

import shutil
import time
from pathlib import Path

from rich.console import Console

from ratewarden.control import block, set_limits
from ratewarden.processes import start_worker, stop_process
from ratewarden.replay import replay, write_decisions, write_trace
from ratewarden.summary import print_summary
from ratewarden.synth import synthetic_trace
from schemas.limits import BlocklistEntry, RateLimit
from streams.kafka_local import LocalKafka
from streams.settings import Settings
from streams.topics import ensure_topics

__all__ = ["run_demo"]


def run_demo(console: Console, users: int = 300, minutes: float = 3.0, seed: int = 7) -> int:
    home = Path("var/demo")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    broker = LocalKafka(home / "kafka")
    worker = None
    try:
        with console.status("starting Kafka (KRaft, local JVM)"):
            bootstrap = broker.start()
        console.print(f"Kafka at [bold]{bootstrap}[/bold]")
        settings = Settings(kafka_bootstrap_servers=bootstrap, var_dir=home)
        ensure_topics(settings)
        set_limits(
            [
                RateLimit(user_id="user-00003", limit=20, window=60, algorithm="sliding"),
                RateLimit(user_id="user-00004", limit=10, window=60, shadow=True),
                RateLimit(user_id="user-00005", limit=3, window=60, request_type="login"),
            ],
            settings,
        )
        block(BlocklistEntry(subject="user-00006", kind="user", reason="demo"), settings)
        worker = start_worker(settings, home / "worker.log", loglevel="warning")
        events = synthetic_trace(users=users, minutes=minutes, seed=seed)
        write_trace(home / "trace.jsonl", events)
        console.print(f"replaying {len(events):,} events from {users} users over {minutes:g} minutes of event time")
        started = time.monotonic()
        decisions = replay(events, settings, timeout=120.0)
        elapsed = time.monotonic() - started
        write_decisions(home / "decisions.jsonl", decisions)
        print_summary(decisions, console)
        console.print(
            f"{len(decisions):,} decisions in {elapsed:.1f} s; trace and decisions in {home}/ "
            f"(limits: user-00003 sliding 20/min, user-00004 shadow 10/min, user-00005 3 logins/min, user-00006 blocked)"
        )
        return 0
    finally:
        if worker is not None:
            stop_process(worker)
        broker.stop()
