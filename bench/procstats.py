"""Per-process resource figures from /proc: CPU time sampled over wall time, and peak RSS."""

from __future__ import annotations

import bisect
import os
import threading
import time

__all__ = ["CpuSampler", "peak_rss_mib", "status_mib", "cpu_seconds", "system_busy_seconds", "tree_cpu_seconds",
           "wait_quiet"]

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> tuple[int, float]:
    """(parent pid, utime + stime in seconds) of ``pid`` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK  # fields 4, 14 and 15 of proc(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    return _stat(pid)[1]


def system_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle (user+nice+system+irq+softirq+steal) since boot."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and all its live descendants (the benchmark's own processes)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent, seconds = _stat(entry)
        except OSError:
            continue
        parents[int(entry)], cpu[int(entry)] = parent, seconds
    total = 0.0
    for pid, seconds in cpu.items():
        walk = pid
        while walk > 1 and walk != root:
            walk = parents.get(walk, 0)
        if walk == root:
            total += seconds
    return total


def status_mib(pid: int, field: str) -> float | None:
    """A kB field of /proc/PID/status (``VmRSS``, ``VmHWM``, ...) in MiB, or None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set size) of ``pid`` in MiB, or None if unreadable."""
    return status_mib(pid, "VmHWM")


class CpuSampler:
    """Samples, every ``interval`` s in a daemon thread: the CPU seconds of one process, of the
    benchmark's process tree, and of the whole machine; so that CPU used by processes the benchmark
    did not start (other work on a shared machine) can be reported."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.foreign: list[float] = []  # machine busy minus our tree, cumulative
        self._root = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cpu-{pid}", daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                cpu = cpu_seconds(self.pid)
                foreign = system_busy_seconds() - tree_cpu_seconds(self._root)
            except (OSError, IndexError, ValueError):
                return
            self.times.append(time.time())
            self.cpu.append(cpu)
            self.foreign.append(foreign)
            self._stop.wait(self.interval)

    def _at(self, when: float, cpu: list[float]) -> float:
        """The cumulative series ``cpu`` at wall time ``when``, linearly interpolated between samples."""
        times = self.times
        i = bisect.bisect_left(times, when)
        if i <= 0:
            return cpu[0]
        if i >= len(times):
            return cpu[-1]
        t0, t1 = times[i - 1], times[i]
        return cpu[i - 1] + (cpu[i] - cpu[i - 1]) * (when - t0) / (t1 - t0)

    def percent(self, start: float, end: float, series: str = "cpu") -> float | None:
        """Average CPU% (100 = one core) between wall times ``start`` and ``end``: of the process
        (``series="cpu"``) or of everything the benchmark did not start (``"foreign"``)."""
        values = getattr(self, series)
        if len(self.times) < 2 or end <= start:
            return None
        return 100.0 * (self._at(end, values) - self._at(start, values)) / (end - start)


def wait_quiet(max_wait: float, threshold: float = 15.0, window: float = 3.0) -> float:
    """Wait up to ``max_wait`` s for a ``window`` in which processes the benchmark did not start use
    less than ``threshold``% CPU (100 = one core); return the last measured share."""
    root, deadline = os.getpid(), time.monotonic() + max_wait
    while True:
        busy, ours = system_busy_seconds(), tree_cpu_seconds(root)
        time.sleep(window)
        share = 100.0 * ((system_busy_seconds() - busy) - (tree_cpu_seconds(root) - ours)) / window
        if share < threshold or time.monotonic() >= deadline:
            return share
