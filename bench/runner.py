"""One measured run of one implementation: a backlog (throughput) run, then a live (latency) run.

The worker is started only after the whole backlog is in the requests topic, so the throughput is
``N / (CreateTime of the last decision - CreateTime of the first)``, independent of start-up time.
While the worker runs the benchmark only samples /proc and polls end offsets; decisions are read
back afterwards. The live run then offers a fixed rate from a separate pacer process and reads back
both topics to pair each request's CreateTime with its decision's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.impls import Implementation, run_env, run_settings
from bench.kafka_read import TopicReader, decode_id, decode_verdict
from bench.procstats import CpuSampler, peak_rss_mib
from bench.profile import start_py_spy, stop_py_spy
from bench.workload import Workload, publish_backlog
from ratewarden.processes import stop_process
from streams.topics import ensure_topics

__all__ = ["RunResult", "Children", "run_once"]

ROOT = Path(__file__).resolve().parent.parent
Report = Callable[[str, int, int], None]  # (what, done, total)


class Children:
    """Every process a run starts, so that the benchmark can stop them all, whatever happens."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def start(self, command, env, log: Path, **kwargs) -> subprocess.Popen:
        with open(log, "ab") as handle:
            process = subprocess.Popen(list(command), env=env, stdout=kwargs.pop("stdout", handle),
                                       stderr=handle, start_new_session=True, cwd=ROOT, **kwargs)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            try:
                stop_process(process, timeout=30.0)
            except TimeoutError:  # killed; go on stopping the others
                pass
        self.processes.clear()


@dataclass
class RunResult:
    impl: str
    round: int
    events: int
    decisions: int = 0
    duplicates: int = 0
    missing: int = 0
    rate: float | None = None
    cpu: float | None = None
    other_cpu: float | None = None  # CPU% of processes the benchmark did not start, during the backlog run
    rss_mib: float | None = None
    startup_s: float | None = None
    offered: float | None = None
    achieved: float | None = None
    live_sent: int = 0
    live_duplicates: int = 0
    live_missing: int = 0
    live_cpu: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    produce_ack_ms: dict[str, float | None] = field(default_factory=dict)  # pacer: batch due -> broker ack
    verdicts: dict[str, str] = field(default_factory=dict, repr=False)
    profile: Path | None = None
    problems: list[str] = field(default_factory=list)


def _wait_for(reader: TopicReader, since: dict[int, int], target: int, worker: subprocess.Popen,
              report: Report, what: str, stall: float, on_first: Callable[[], None] | None = None) -> int:
    """Poll end offsets until ``target`` records arrived after ``since``, the worker died, or it stalled.

    ``on_first`` is called once, as soon as the first record is seen.
    """
    last_count, last_change = -1, time.monotonic()
    while True:
        count = reader.count(since)
        report(what, min(count, target), target)
        if count and on_first is not None:
            on_first()
            on_first = None
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        if count >= target or worker.poll() is not None or time.monotonic() - last_change > stall:
            return count
        time.sleep(0.25 if count or on_first is None else 0.05)


def _read_all(decisions: TopicReader, expected: int, worker: subprocess.Popen, patience: float = 15.0) -> list:
    """Every decision so far; re-read for up to ``patience`` s while fewer than ``expected`` request ids are
    visible (end offsets also count transaction markers, so under exactly-once the count can run ahead)."""
    deadline = time.monotonic() + patience
    while True:
        records = decisions.read()
        if (len({decode_id(r.value) for r in records}) >= expected or worker.poll() is not None
                or time.monotonic() > deadline):
            return records
        time.sleep(1.0)


def _tally(ids: list[str], expected: set[str] | None, sent: int) -> tuple[int, int]:
    """(duplicates, missing) for decided ``ids`` against the ``expected`` ids (or a count)."""
    counts = Counter(ids)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    missing = len(expected - counts.keys()) if expected is not None else max(0, sent - len(counts))
    return duplicates, missing


def _percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])  # noqa: E731
    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": float(ordered[-1])}


def run_once(impl: Implementation, round_no: int, bootstrap: str, run_dir: Path, tag: str, partitions: int,
             workload: Workload, base_ts: float, rate: float, live_seconds: float, children: Children,
             report: Report, profile_dir: Path | None = None,
             settle: Callable[[str], None] = lambda phase: None) -> RunResult:
    """Measure ``impl`` once on fresh topics and a fresh state directory (py-spy it into ``profile_dir``).

    ``settle(phase)`` is called just before each measured phase ("backlog", "live"), e.g. to wait
    until the machine is quiet.
    """
    result = RunResult(impl.key, round_no, impl.events)
    settings = run_settings(bootstrap, tag, run_dir, partitions)
    var_dir = settings.var_dir
    var_dir.mkdir(parents=True)
    ensure_topics(settings)
    if impl.setup is not None:
        report("setting up", 0, 1)
        impl.setup(settings)
    expected = publish_backlog(bootstrap, settings.requests_topic, workload, impl.events, base_ts,
                               progress=lambda n: report("publishing backlog", n, impl.events))
    decisions = TopicReader(bootstrap, settings.decisions_topic)
    requests = TopicReader(bootstrap, settings.requests_topic)
    log = var_dir / "worker.log"
    settle("backlog")
    worker = children.start(impl.command, run_env(settings, impl.env), log)
    started = time.time()
    spy: list[subprocess.Popen | None] = []

    def profile() -> None:  # from the first decision on: start-up (imports, group join) is not profiled
        profile_dir.mkdir(parents=True, exist_ok=True)
        result.profile = profile_dir / f"{tag}.txt"
        spy.append(start_py_spy(worker.pid, result.profile, children.start))
        if spy[0] is None:
            result.problems.append("py-spy not found: no profile")

    try:
        with CpuSampler(worker.pid) as sampler:
            count = _wait_for(decisions, {}, impl.events, worker, report, "deciding backlog", stall=90.0,
                              on_first=profile if profile_dir is not None else None)
            if spy:
                stop_py_spy(spy[0])
            if count < impl.events:
                result.problems.append(f"backlog: only {count} of {impl.events} decisions (see {log})")
            time.sleep(1.0)  # let late duplicates, if any, arrive
            records = _read_all(decisions, impl.events, worker)
            pairs = [decode_verdict(r.value) for r in records]
            result.verdicts = dict(pairs)
            result.decisions = len(records)
            result.duplicates, result.missing = _tally([p[0] for p in pairs], expected, impl.events)
            if records:
                first = min(r.timestamp for r in records) / 1000.0
                last = max(r.timestamp for r in records) / 1000.0
                result.startup_s = first - started
                if last > first:  # N / span when complete; else what was decided, and a problem above
                    result.rate = len(result.verdicts) / (last - first)
                result.cpu = sampler.percent(first, last)
                result.other_cpu = sampler.percent(first, last, "foreign")
                if result.other_cpu is not None and result.other_cpu > 15.0:
                    result.problems.append(f"other processes used {result.other_cpu:.0f}% CPU during the backlog run")
            if worker.poll() is None and result.rate:
                _live(result, impl, settings, bootstrap, rate or _half(result.rate), live_seconds, workload,
                      requests, decisions, worker, sampler, children, var_dir, report, settle)
            result.rss_mib = peak_rss_mib(worker.pid)
    finally:
        decisions.close()
        requests.close()
        alive = worker.poll() is None
        try:
            stop_process(worker, timeout=30.0)
        except TimeoutError as exc:
            result.problems.append(str(exc))
        if not alive:
            result.problems.append(f"worker exited early with code {worker.returncode} (see {log})")
        elif worker.returncode not in (0, -15):
            result.problems.append(f"worker exited with code {worker.returncode} on SIGTERM (see {log})")
    return result


def _half(rate: float) -> float:
    """Half the measured throughput, rounded to 100 events/s (at least 100)."""
    return max(100.0, round(rate / 2.0, -2))


def _live(result: RunResult, impl: Implementation, settings, bootstrap: str, rate: float, seconds: float,
          workload: Workload, requests: TopicReader, decisions: TopicReader, worker: subprocess.Popen,
          sampler: CpuSampler, children: Children, var_dir: Path, report: Report,
          settle: Callable[[str], None]) -> None:
    """Offer ``rate`` events/s for ``seconds`` from a pacer process; record latency percentiles."""
    time.sleep(2.0)  # caught up: let the last flush and commits settle
    settle("live")
    req_since, dec_since = requests.ends(), decisions.ends()
    total = max(1, int(rate * seconds))
    report(f"live run at {rate:,.0f}/s", 0, total)
    pacer = children.start(
        [sys.executable, str(ROOT / "bench" / "pacer.py"), "--bootstrap", bootstrap, "--topic",
         settings.requests_topic, "--rate", str(rate), "--duration", str(seconds), "--users",
         str(workload.users), "--seed", str(workload.seed), "--prefix", "live"],
        None, var_dir / "pacer.log", stdout=subprocess.PIPE)
    out, _ = pacer.communicate(timeout=seconds * 10 + 120)
    if pacer.returncode != 0:
        result.problems.append(f"pacer failed with code {pacer.returncode} (see {var_dir / 'pacer.log'})")
        return
    paced = json.loads(out.decode().strip().splitlines()[-1])
    result.offered, result.achieved, result.live_sent = rate, paced["achieved_rate"], paced["sent"]
    result.produce_ack_ms = {"p50": paced.get("ack_p50_ms"), "p99": paced.get("ack_p99_ms")}
    if paced["achieved_rate"] < 0.97 * rate:
        result.problems.append(f"live: offered {rate:,.0f}/s but the pacer achieved {paced['achieved_rate']:,.0f}/s "
                               f"(fell {paced['max_behind_ms']:.0f} ms behind at worst)")
    count = _wait_for(decisions, dec_since, total, worker, report, f"live run at {rate:,.0f}/s", stall=30.0)
    result.live_cpu = sampler.percent(paced["first_wall"], paced["last_wall"])
    sent_at = {decode_id(r.value): r.timestamp for r in requests.read(req_since)}
    decided = [(decode_id(r.value), r.timestamp) for r in decisions.read(dec_since)]
    result.live_duplicates, result.live_missing = _tally([d[0] for d in decided], set(sent_at), total)
    if count < total:
        result.problems.append(f"live: only {count} of {total} decisions")
    seen: set[str] = set()
    latencies = []
    with open(var_dir / "live-latency.csv", "w") as series:  # kept with --keep: latency over time
        series.write("request_create_ms,decision_create_ms\n")
        for request_id, timestamp in decided:
            if request_id in sent_at and request_id not in seen:
                seen.add(request_id)
                latencies.append(timestamp - sent_at[request_id])
                series.write(f"{sent_at[request_id]},{timestamp}\n")
    result.latency_ms = _percentiles(latencies)
