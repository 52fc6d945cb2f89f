"""Optional py-spy profile of a worker during its backlog run, and a text summary of where time went.

``--py-spy DIR`` makes the benchmark attach ``py-spy record --format raw`` (collapsed stacks) to each
worker from its first decision until its backlog is decided (start-up is left out). Profiled runs are slower (py-spy samples the
worker and competes for the same cores), so do not mix their figures with unprofiled ones.
``python bench/profile.py FILE.txt`` prints the summary again.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["start_py_spy", "stop_py_spy", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def start_py_spy(pid: int, out: Path, start) -> subprocess.Popen | None:
    """Start ``py-spy record`` on ``pid`` through ``start(command, env, log)``; None if py-spy is missing."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        return None
    command = [exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking",
               "--output", str(out)]
    return start(command, None, out.with_suffix(".log"))


def stop_py_spy(process: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """Stop recording (SIGINT makes py-spy write its output) and wait for it."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _package(path: str) -> str:
    """The top-level package or module of a frame's file, as py-spy shortens it (``aiokafka/...``)."""
    if path.startswith("<"):
        return path.strip("<>").split()[-1]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return path.lstrip("/").split("/", 1)[0].removesuffix(".py")


def summarize(raw: Path, top: int = 15) -> list[str]:
    """Lines: samples, self time by package, top functions by self and by inclusive time."""
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        names = []
        for frame in frames:
            match = _FRAME.match(frame)
            func, file = (match["func"], match["file"]) if match else (frame, "?")
            names.append((f"{func} ({Path(file).name})", _package(file)))
        self_time[names[-1][0]] += n
        by_package[names[-1][1]] += n
        for name in {name for name, _ in names}:
            total_time[name] += n
    if not samples:
        return [f"{raw}: no samples"]
    pct = lambda n: f"{100.0 * n / samples:5.1f}%"  # noqa: E731
    lines = [f"{raw.name}: {samples:,} samples (200 Hz, busy threads only)", "self time by package:"]
    lines += [f"  {pct(n)}  {name}" for name, n in by_package.most_common(top)]
    lines.append("self time by function:")
    lines += [f"  {pct(n)}  {name}" for name, n in self_time.most_common(top)]
    lines.append("inclusive time by function:")
    lines += [f"  {pct(n)}  {name}" for name, n in total_time.most_common(top + 10)]
    return lines


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print("\n".join(summarize(Path(argument))))
