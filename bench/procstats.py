"""Per-process resource figures from /proc: CPU time sampled over wall time, and peak RSS."""

from __future__ import annotations

import bisect
import os
import threading
import time

__all__ = ["CpuSampler", "peak_rss_mib", "cpu_seconds"]

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of proc(5)


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set size) of ``pid`` in MiB, or None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class CpuSampler:
    """Samples (wall time, CPU seconds) of one process every ``interval`` s in a daemon thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.times: list[float] = []
        self.cpu: list[float] = []
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
            except (OSError, IndexError, ValueError):
                return
            self.times.append(time.time())
            self.cpu.append(cpu)
            self._stop.wait(self.interval)

    def _at(self, when: float) -> float:
        """CPU seconds at wall time ``when``, linearly interpolated between samples."""
        times, cpu = self.times, self.cpu
        i = bisect.bisect_left(times, when)
        if i <= 0:
            return cpu[0]
        if i >= len(times):
            return cpu[-1]
        t0, t1 = times[i - 1], times[i]
        return cpu[i - 1] + (cpu[i] - cpu[i - 1]) * (when - t0) / (t1 - t0)

    def percent(self, start: float, end: float) -> float | None:
        """Average CPU% (100 = one core) between wall times ``start`` and ``end``."""
        if len(self.times) < 2 or end <= start:
            return None
        return 100.0 * (self._at(end) - self._at(start)) / (end - start)
