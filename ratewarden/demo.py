"""``make demo``: the main job end to end on a real broker, then stop everything it started.

Broker (local KRaft JVM) -> one worker (limiter, history, analytics) and the HTTP gateway -> a
simulated trace with labelled attacks replayed through Kafka -> a few calls through the gateway ->
the analyst report (terminal, CSV, Parquet, PNG). Everything lives in ``var/demo`` (wiped first).

With ``keep`` (``ratewarden demo --keep``, ``make demo KEEP=1``) the broker, the worker and the
gateway stay up after the report, so the web console can be opened on what the demo produced: it
prints the console's URL and the keys of an analyst and an admin, and waits for Ctrl-C (or SIGTERM);
then, as without ``keep``, it stops everything it started, each by its own PID.
"""

import logging
import shutil
import signal
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ratewarden.control import block, set_limits
from ratewarden.gateway.testing import GatewayStack
from ratewarden.replay import replay, write_decisions, write_trace
from ratewarden.reports import read_topic, run_report
from ratewarden.simulate import simulate, write_labels
from ratewarden.summary import print_summary
from schemas.limits import BlocklistEntry, RateLimit
from streams.devkafka.broker import LocalKafka

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def _gateway_calls(stack: GatewayStack, console: Console) -> None:
    """Three calls of a client whose limit is 2 per minute, then its history, through HTTP."""
    table = Table("call", "status", "RateLimit", "Retry-After", "status in body", title="POST /requests as client-1 (limit 2/min)")
    with stack.client("client") as client:
        for i in range(1, 4):
            answer = client.post("/requests", json={"request_type": "checkout"})
            h = answer.headers
            table.add_row(str(i), str(answer.status_code), h.get("ratelimit", ""), h.get("retry-after", "-"),
                          answer.json()["status"])
        history = client.get("/requests/client-1", params={"limit": 3}).json()
    console.print(table)
    console.print("history of client-1 (newest first):",
                  [(item["verdict"], item["reason"]) for item in history["requests"]])


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _serve_until_interrupted(stack: GatewayStack, console: Console) -> None:
    """Print where the console is and two login keys, then wait for Ctrl-C or SIGTERM (both end the wait).

    The keys are those of the stack's ``analyst-1`` and ``admin-1`` users, made for this run only; the
    lines are flushed at once, so a script reading the output through a pipe sees them.
    """
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # Explicitly: a process started in the background of a non-interactive shell inherits SIGINT ignored,
    # and Python then leaves it so (Ctrl-C, or a script's SIGINT, would never end the wait).
    signal.signal(signal.SIGINT, _interrupt)
    try:
        console.print(f"console: {stack.url}/console/", soft_wrap=True, markup=False, highlight=False)
        console.print(f"analyst key (analyst-1): {stack.keys['analyst']}", soft_wrap=True, markup=False, highlight=False)
        console.print(f"admin key (admin-1): {stack.keys['admin']}", soft_wrap=True, markup=False, highlight=False)
        console.print("broker, worker and gateway keep running; Ctrl-C stops them")
        console.file.flush()
        workers = ", ".join(f"{name} {process.pid}" for name, process in stack.workers.items())
        logger.info("kept running: workers %s, gateway on %s", workers, stack.url)
        signal.pause()  # until a signal: SIGINT and SIGTERM raise KeyboardInterrupt
    except KeyboardInterrupt:
        # A second Ctrl-C (or make's SIGTERM) must not cut the stop short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous = signal.SIG_IGN
        console.print("stopping the gateway, the worker and the broker ...")
        console.file.flush()
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(console: Console, users: int = 300, minutes: float = 10.0, seed: int = 7, keep: bool = False) -> int:
    # Absolute: worker processes run from the repository, and must use this directory, not one there.
    home = Path("var/demo").resolve()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    broker = LocalKafka(home / "kafka")
    with console.status("starting Kafka (KRaft, local JVM)"):
        bootstrap = broker.start()
    console.print(f"Kafka at [bold]{bootstrap}[/bold]")
    try:
        console.print("starting a worker and the gateway ...")
        with GatewayStack(bootstrap, home, workers=1, default_limit=100) as stack:
            settings = stack.settings
            console.print(f"worker and gateway ({stack.url}) up; topics suffixed {settings.app_id.rsplit('-', 1)[-1]}")
            set_limits([
                RateLimit(user_id="client-1", limit=2, window=60),
                RateLimit(user_id="user-00003", limit=20, window=60, algorithm="sliding"),
                RateLimit(user_id="user-00004", limit=10, window=60, shadow=True),
            ], settings)
            block(BlocklistEntry(subject="user-00006", kind="user", reason="demo"), settings)
            sim = simulate(minutes=minutes, users=users, seed=seed)
            write_trace(home / "trace.jsonl", sim.events)
            write_labels(home / "labels.json", sim.labels)
            console.print(f"replaying {len(sim.events):,} events: {users} users, {minutes:g} minutes of event time, "
                          f"{len(sim.labels['attackers'])} attacking IPs")
            started = time.monotonic()
            decisions = replay(sim.events, settings, timeout=120.0)
            console.print(f"{len(decisions):,} decisions in {time.monotonic() - started:.1f} s")
            write_decisions(home / "decisions.jsonl", decisions)
            print_summary(decisions, console)
            _gateway_calls(stack, console)
            time.sleep(settings.analytics_idle + 1)  # let the last analytics window close on its idle timeout
            # The report covers the replayed trace (event time of 2024), not the live gateway calls.
            (home / "flags.jsonl").write_bytes(b"".join(v + b"\n" for v in read_topic(settings, settings.ip_flags_topic)))
            run_report(home / "report", decisions=home / "decisions.jsonl", flags=home / "flags.jsonl", console=console,
                       console_url=stack.url if keep else None)
            if keep:
                _serve_until_interrupted(stack, console)
        console.print(f"trace, labels, decisions and report in {home}/", soft_wrap=True)
        return 0
    finally:
        broker.stop()
