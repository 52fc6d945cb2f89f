"""Starting and stopping worker processes (demo, tests, benchmarks): always by their own PID."""

import os
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings

__all__ = ["start_cli", "start_worker", "stop_process", "stop_processes"]

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
