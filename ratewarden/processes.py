"""Starting and stopping worker processes (demo, tests, benchmarks): always by their own PID; and the
heap tuning every long-running process applies once it has started."""

import gc
import logging
import os
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings

__all__ = ["YOUNG_GENERATION_THRESHOLD", "freeze_startup_heap", "start_cli", "start_worker", "stop_process",
           "stop_processes"]

logger = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[1]


def start_cli(settings: Settings, log: Path, *args: str, **extra_env: str) -> subprocess.Popen:
    """``ratewarden ARGS...`` in a new process with ``settings`` passed through its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATEWARDEN_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(settings.to_env())  # RATEWARDEN_KAFKA_BOOTSTRAP_SERVERS carries the address
    env.update(extra_env)
    return subprocess.Popen(
        [sys.executable, "-m", "ratewarden.cli", *args],
        env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=_ROOT, start_new_session=True,
    )


def start_worker(
    settings: Settings, log: Path, loglevel: str = "info", metrics_port: int = 0, **extra_env: str
) -> subprocess.Popen:
    """A ``ratewarden worker`` process with ``settings`` (passed through its environment)."""
    return start_cli(
        settings, log, "worker", "--loglevel", loglevel, "--metrics-port", str(metrics_port), **extra_env
    )


def stop_process(process: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM (a worker then flushes state and offsets), SIGKILL after ``timeout``; the exit code.

    Raises TimeoutError when SIGKILL was needed, so callers notice a worker that hangs on stop.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise TimeoutError(f"process {process.pid} did not stop within {timeout:g} s; killed") from None
    return process.returncode


def stop_processes(processes, timeout: float = 60.0) -> list[int]:
    """:func:`stop_process` each of ``processes``, all of them even when one needed SIGKILL (then TimeoutError)."""
    codes, late = [], []
    for process in processes:
        try:
            codes.append(stop_process(process, timeout))
        except TimeoutError as exc:
            codes.append(process.returncode)
            late.append(str(exc))
    if late:
        raise TimeoutError("; ".join(late))
    return codes


#: Allocations between young-generation collections (CPython's default: 700). The hot path allocates
#: tens of objects per event, nearly all freed by reference counting within the batch; at 700 the
#: collector ran ~2,000 times in a 600,000-event backlog and promoted the decisions still held for the
#: worker's in-process feeds, which then cost full collections. At 20,000: about 15 collections, and
#: 8-10% more decisions/s for both the limiter role and all roles (``bench/limiter_bench.py``,
#: alternating runs).
YOUNG_GENERATION_THRESHOLD = 20_000


def freeze_startup_heap() -> None:
    """Move every object alive after start-up (modules, Faust, clients) out of the collector's reach.

    A full collection scans the whole heap: with Faust and aiokafka loaded that took 50-120 ms,
    measured in the worker, and 60-80 ms in the gateway (FastAPI, grpcio), stalling every request
    behind it. Start-up objects live as long as the process, so ``gc.freeze()`` leaves the collector
    only what the hot path allocates, and it runs less often (:data:`YOUNG_GENERATION_THRESHOLD`).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
    logger.debug("froze %d start-up objects out of garbage collection", gc.get_freeze_count())
