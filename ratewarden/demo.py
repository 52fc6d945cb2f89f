"""``make demo``: a real broker, a worker, a synthetic trace replayed, a summary; then stop all.

Everything runs in ``var/demo`` (wiped first, so state is fresh) on free loopback ports. Whatever
the demo started is stopped by its own PID, also when it fails.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from ratewarden.control import block, set_limit
from ratewarden.replay import replay, write_decisions, write_trace
from ratewarden.summary import print_summary
from ratewarden.synth import synthetic_trace
from schemas.limits import BlocklistEntry, RateLimit
from streams.kafka_local import LocalKafka
from streams.settings import Settings
from streams.topics import ensure_topics

__all__ = ["run_demo", "start_worker", "stop_process"]


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    """A ``ratewarden worker`` subprocess with ``env``, logging to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "ratewarden.cli", "worker", "--loglevel", "warning"],
        env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "RATEWARDEN_VAR_DIR": str(home)}
        settings = Settings(kafka_bootstrap_servers=bootstrap, var_dir=home)
        ensure_topics(settings)
        set_limit(RateLimit(user_id="user-00003", limit=20, window=60, algorithm="sliding"), settings)
        set_limit(RateLimit(user_id="user-00004", limit=10, window=60, shadow=True), settings)
        set_limit(RateLimit(user_id="user-00005", limit=3, window=60, request_type="login"), settings)
        block(BlocklistEntry(subject="user-00006", kind="user", reason="demo"), settings)
        worker = start_worker(env, home / "worker.log")
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
