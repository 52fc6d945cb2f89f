"""What every benchmark command shares: SIGTERM/SIGHUP taken as Ctrl-C, and the command line it ran.

A benchmark stops what it started (brokers, workers, peers) on its ``KeyboardInterrupt`` path; a
SIGTERM from a supervisor or a closed terminal must take the same path. The command line goes into
the Markdown it writes, with the interpreter relative to the repository when it lives inside it, so
the text can be pasted from a clone.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

__all__ = ["command_line", "interrupt_on_signals"]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_signals(*signals: int) -> None:
    """Raise KeyboardInterrupt on ``signals`` (default SIGTERM and SIGHUP)."""
    for signum in signals or (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)


def command_line(script: str, argv: list[str]) -> str:
    """``script`` with ``argv`` as it was run, e.g. ``.venv/bin/python bench/limiter_bench.py --rounds 3``."""
    return shlex.join([_python(), script, *argv])


def _python() -> str:
    """The interpreter as the reader would type it: ``.venv/bin/python`` for any project venv (also one
    of another checkout the run borrowed), else its name — never an absolute path of this machine."""
    parts = sys.executable.split(os.sep)
    if ".venv" in parts:
        return "/".join(parts[parts.index(".venv"):])
    return os.path.basename(sys.executable)
