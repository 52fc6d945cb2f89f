"""Chaos soak: three exactly-once workers under steady load while faults are injected; then verify.

    .venv/bin/python bench/chaos.py [--minutes 10] [--min-faults 0] [--rate 1000] [--seed 7]

A private broker (its own LocalKafka home) and topics of their own (``Settings.scoped``); three
``ratewarden worker`` processes, all roles, ``processing_guarantee=exactly_once``, each with its own
state directory. ``bench/chaos_load.py`` offers ``--rate`` events/s from ``--users`` users (the
benchmark workload's skew), each stamped with the wall time it was due, so fixed windows roll over
during the run. After a warm-up (the limiter caught up), every 30-60 s (seeded) one fault is
injected (``bench/faults.py``: SIGKILL and restart of a worker, SIGSTOP beyond the session timeout
then SIGCONT, broker stop and start); the next waits until the previous one has recovered
(``bench/lagwatch.py`` defines recovery) or ``--recovery-bound`` s have passed. Faults go on for
``--minutes``, and past that until ``--min-faults`` faults have been injected. Then the load stops,
the workers catch up (every published request decided and committed) and ``bench/chaos_check.py``
reads the topics read_committed: one decision per request, allowed <= limit per (user, window),
abuse reports counting every request once. Exit status 1 on violations, 2 on other problems.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.live import Live  # noqa: E402
from rich.logging import RichHandler  # noqa: E402

from bench.chaos_check import eligible_windows, read_reports, verify  # noqa: E402
from bench.chaos_report import Status, run_facts, tables, write_summary  # noqa: E402
from bench.faults import Cluster, Fault, FaultPlan  # noqa: E402
from bench.lagwatch import LagWatch  # noqa: E402
from bench.report import machine  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

__all__ = ["main"]

logger = logging.getLogger("bench.chaos")
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of faults under load (after warm-up)")
    p.add_argument("--min-faults", type=int, default=0, help="go on past --minutes until this many faults")
    p.add_argument("--rate", type=float, default=1000.0, help="offered events/s")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--limit", type=int, default=20, help="default per-user limit (fixed window)")
    p.add_argument("--window", type=float, default=10.0, help="limit window, s")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--gap", type=float, nargs=2, default=(30.0, 60.0), metavar=("MIN", "MAX"),
                   help="seconds between injections")
    p.add_argument("--pause", type=float, nargs=2, default=(12.0, 20.0), metavar=("MIN", "MAX"),
                   help="SIGSTOP length, s (the consumers' session timeout is 10 s)")
    p.add_argument("--lag-bound", type=float, default=2.0, help="recovered: lag under this many seconds of load")
    p.add_argument("--stable", type=float, default=10.0, help="recovered: healthy for this many seconds on end")
    p.add_argument("--recovery-bound", type=float, default=180.0, help="a fault not recovered by then is a problem")
    p.add_argument("--catch-up", type=float, default=600.0, help="s to wait for every request to be decided")
    p.add_argument("--summary", type=Path, default=None, help="JSON summary (default var/chaos/<tag>.json)")
    p.add_argument("--keep", action="store_true", help="keep the run directory (kept anyway on violations)")
    return p.parse_args(argv)


def _interrupt(signum, frame):  # SIGTERM -> the same clean-up as Ctrl-C: workers, load and broker stopped
    raise KeyboardInterrupt(f"signal {signum}")


def _follow(pipe, status: Status, final: dict) -> None:
    """Read the load process's JSON progress lines into ``status.load`` (the last into ``final``)."""
    for line in pipe:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        status.load = data
        if data.get("done"):
            final.update(data)


def _observe(status: Status, watch: LagWatch, cluster: Cluster) -> None:
    latest = watch.latest
    if latest is not None:
        status.lag, status.committed = latest.lag, sum(latest.committed.values())
    status.workers = f"{cluster.alive()}/{len(cluster.names)} alive, {cluster.starts - len(cluster.names)} restarts"
    if latest is not None:
        status.workers += f"; limiter group {latest.state or '?'} with {latest.members} members"


def run_faults(args, status: Status, cluster: Cluster, watch: LagWatch, bound: int, problems: list[str]) -> None:
    """Inject faults for ``--minutes`` (and until ``--min-faults``), each after the previous recovered."""
    plan = FaultPlan(args.seed, tuple(args.gap), tuple(args.pause))
    status.faults_from = start = time.time()
    status.phase = "faults"
    end = start + args.minutes * 60.0
    status.next_fault = start + plan.next_gap()
    current: Fault | None = None
    while True:
        now = time.time()
        status.exits.extend(cluster.supervise())
        if current is not None:
            current.recovered = watch.recovered_at(current.done, bound, args.workers, args.stable)
            if current.recovered is not None:
                logger.info("fault %d recovered in %.1f s", current.number, current.recovery)
                current = None
            elif now - current.done > args.recovery_bound:
                problems.append(f"fault {current.number} ({current.kind} {current.target}) not recovered "
                                f"{args.recovery_bound:g} s after its last action")
                current = None
        if current is None and now >= end and len(status.faults) >= args.min_faults:
            return
        if current is None and now >= status.next_fault:
            kind = plan.next_kind()
            target = "broker" if kind == "broker" else plan.pick(cluster.names)
            current = Fault(len(status.faults) + 1, kind, target, time.time())
            status.faults.append(current)
            logger.info("fault %d: %s %s", current.number, kind, target)
            cluster.inject(current, plan)
            status.next_fault = current.injected + plan.next_gap()
        time.sleep(0.5)


def wait_until(condition, seconds: float, status: Status, cluster: Cluster) -> bool:
    """Poll ``condition`` every second for up to ``seconds`` while supervising the workers."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        status.exits.extend(cluster.supervise())
        if condition():
            return True
        time.sleep(1.0)
    return False


def wait_for_reports(bootstrap: str, settings: Settings, final: dict, seconds: float) -> bool:
    """Until every window fully inside the run has a report and no new report came for 15 s."""
    wanted = set(eligible_windows(final["first_ts"], final["last_ts"], settings.analytics_window,
                                  settings.analytics_grace))
    deadline, count, changed = time.time() + seconds, -1, time.time()
    while time.time() < deadline:
        reports = read_reports(bootstrap, settings.abuse_reports_topic)
        if len(reports) != count:
            count, changed = len(reports), time.time()
        if wanted <= {r.window_start for r in reports} and time.time() - changed >= 15.0:
            return True
        time.sleep(3.0)
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    for name in ("bench", "streams.devkafka.broker"):
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # reconnect noise while the broker restarts
    signal.signal(signal.SIGTERM, _interrupt)
    tag = f"chaos{uuid.uuid4().hex[:6]}"
    home = Path(tempfile.mkdtemp(prefix=f"rw-{tag}-"))
    summary_path = args.summary or ROOT / "var" / "chaos" / f"{tag}.json"
    command = "python bench/chaos.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    bound = max(1, int(args.rate * args.lag_bound))
    code_at_start = dict(machine(""))["code"]  # workers restarted mid-run import the tree as it is then

    def settings_for(bootstrap: str) -> Settings:
        settings = Settings(
            kafka_bootstrap_servers=bootstrap, var_dir=home, partitions=args.partitions,
            processing_guarantee="exactly_once", default_limit=args.limit, default_window=args.window,
            default_algorithm="fixed",
        ).scoped(tag)
        ensure_topics(settings)
        return settings

    status = Status(planned=args.minutes * 60.0, rate=args.rate)
    cluster = Cluster(home, settings_for, args.workers)
    watch: LagWatch | None = None
    status.observe = lambda: watch is not None and _observe(status, watch, cluster)
    problems: list[str] = []
    verdict, final, load = None, {}, None
    console.print(f"chaos soak {tag}: {args.workers} workers (all roles, exactly-once), {args.partitions} partitions, "
                  f"offered {args.rate:,.0f} events/s from {args.users} users, limit {args.limit} per {args.window:g} s "
                  f"(fixed), faults every {args.gap[0]:g}-{args.gap[1]:g} s for {args.minutes:g} min"
                  f"{f' and at least {args.min_faults} faults' if args.min_faults else ''}; run directory {home}")
    try:
        settings = cluster.start()
        bootstrap = settings.kafka_bootstrap_servers
        watch = LagWatch(bootstrap, settings.requests_topic, settings.limiter_group)
        with watch, Live(get_renderable=status.render, console=console, refresh_per_second=2, transient=True):
            load = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "chaos_load.py"), "--bootstrap", bootstrap, "--topic",
                 settings.requests_topic, "--rate", str(args.rate), "--users", str(args.users), "--seed", str(args.seed)],
                stdout=subprocess.PIPE, stderr=open(home / "load.log", "ab"), text=True, cwd=ROOT)
            threading.Thread(target=_follow, args=(load.stdout, status, final), daemon=True).start()
            status.phase = "warm-up (workers joining, limiter catching up)"
            loaded = time.time()
            warm = lambda: cluster.alive() == args.workers and watch.recovered_at(loaded, bound, args.workers, args.stable) is not None  # noqa: E731
            if not wait_until(warm, 300.0, status, cluster):
                raise RuntimeError("the workers did not catch up with the load within 300 s of warm-up")
            run_faults(args, status, cluster, watch, bound, problems)
            status.phase = "draining (load stopped, waiting for every decision)"
            load.terminate()
            load.wait(timeout=300)
            if not wait_until(lambda: bool(final) and watch.caught_up(), args.catch_up, status, cluster):
                problems.append(f"not every request was decided within {args.catch_up:g} s of the load's end")
            status.phase = "waiting for the last abuse reports"
            if final and not wait_for_reports(bootstrap, settings, final, 180.0):
                problems.append("not every window fully inside the run was reported within 180 s")
            status.phase = "verifying"
            verdict = verify(settings, bootstrap)
    except KeyboardInterrupt as exc:
        problems.append(f"interrupted: {exc}")
    except RuntimeError as exc:  # no warm-up, or the broker came back elsewhere: report what there is
        logger.exception("chaos run failed")
        problems.append(str(exc))
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        problems.extend(cluster.stop())
    if final.get("failed"):
        problems.append(f"the load generator failed to store {final['failed']:,} events ({final.get('errors')})")
    run = run_facts(args, command, bound, final, cluster.starts - args.workers, code_at_start)
    for table in tables(status, verdict, run, problems):
        console.print(table)
    write_summary(summary_path, run, args, status, final, problems, verdict)
    bad = verdict is None or verdict.violation_count > 0
    if bad or problems or args.keep:
        console.print(f"run directory kept: {home} (worker logs: {home}/w*.log)")
    else:
        shutil.rmtree(home, ignore_errors=True)
    console.print(f"summary: {summary_path}; violations: {'unknown' if verdict is None else verdict.violation_count}")
    return 1 if verdict is not None and verdict.violation_count else 2 if bad or problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
