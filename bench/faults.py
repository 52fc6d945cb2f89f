"""The chaos soak's cluster (one private broker, N workers) and the faults it injects into it.

Each worker has a state directory of its own (``<run>/<name>``), like workers on separate machines:
a worker stopped with SIGSTOP still holds its RocksDB stores while the others take its partitions
over, so a shared directory would not model a real deployment. A killed worker is restarted on its
own directory (its disk survives, as after a machine reboot).

Faults (:data:`KINDS`):

* ``kill``: SIGKILL a random worker, then start it again at once;
* ``pause``: SIGSTOP a random worker for longer than the consumer session timeout (so the group
  evicts it and its partitions move), then SIGCONT;
* ``broker``: stop the broker (SIGTERM, controlled shutdown) and start it again on the same home
  and ports; every client must reconnect.

The :class:`Cluster` also supervises: a worker that exits on its own (e.g. a fenced producer after a
pause) is recorded as an :class:`Exit` and started again, as a process supervisor would.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ratewarden.processes import start_worker, stop_process
from streams.devkafka.broker import LocalKafka
from streams.settings import Settings

__all__ = ["KINDS", "Cluster", "Exit", "Fault", "FaultPlan"]

logger = logging.getLogger(__name__)

KINDS = ("kill", "pause", "broker")


@dataclass
class Fault:
    """One injected fault: what, on whom, when (wall times) and how it ended."""

    number: int
    kind: str
    target: str
    injected: float
    done: float | None = None  # the fault's last action: worker respawned, SIGCONT sent, broker answering
    recovered: float | None = None
    detail: str = ""

    @property
    def recovery(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.injected

    def as_dict(self) -> dict:
        return {**asdict(self), "recovery_s": self.recovery,
                "action_s": None if self.done is None else self.done - self.injected}


@dataclass(frozen=True)
class Exit:
    """A worker that exited without being told to."""

    worker: str
    pid: int
    code: int
    wall: float
    reason: str  # the log line saying why


@dataclass
class FaultPlan:
    """The seeded schedule: gaps between injections, kinds in shuffled rounds, targets, pause lengths."""

    seed: int
    gap: tuple[float, float] = (30.0, 60.0)
    pause: tuple[float, float] = (12.0, 20.0)
    rng: random.Random = field(init=False)
    _round: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def next_gap(self) -> float:
        return self.rng.uniform(*self.gap)

    def next_kind(self) -> str:
        """Kinds come in rounds, each a shuffle of all kinds: every kind is exercised even in short runs."""
        if not self._round:
            self._round = list(KINDS)
            self.rng.shuffle(self._round)
        return self._round.pop()

    def pick(self, names: list[str]) -> str:
        return self.rng.choice(names)

    def pause_seconds(self) -> float:
        return self.rng.uniform(*self.pause)


class Cluster:
    """A private broker home and ``workers`` all-roles worker processes on ``settings``."""

    def __init__(self, home: Path, settings_for_broker, workers: int, loglevel: str = "info") -> None:
        self.home = home
        self.broker = LocalKafka(home / "kafka")
        self._settings_for = settings_for_broker  # bootstrap -> the run's scoped Settings
        self.settings: Settings | None = None
        self.names = [f"w{i + 1}" for i in range(workers)]
        self.loglevel = loglevel
        self.processes: dict[str, subprocess.Popen] = {}
        self.exits: list[Exit] = []
        self.starts = 0

    def start(self) -> Settings:
        bootstrap = self.broker.start()
        self.settings = self._settings_for(bootstrap)
        for name in self.names:
            self.spawn(name)
        return self.settings

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def spawn(self, name: str) -> subprocess.Popen:
        settings = self.settings.model_copy(update={"var_dir": self.settings.var_dir / name})
        process = start_worker(settings, self.log(name), loglevel=self.loglevel)
        self.processes[name] = process
        self.starts += 1
        logger.info("started worker %s (pid %d)", name, process.pid)
        return process

    def supervise(self) -> list[Exit]:
        """Restart every worker that exited on its own; return those exits."""
        found = []
        for name, process in list(self.processes.items()):
            if process.poll() is not None:
                found.append(Exit(name, process.pid, process.returncode, time.time(), self._reason(name, process.pid)))
                logger.warning("worker %s (pid %d) exited with code %s; restarting it", name, process.pid,
                               process.returncode)
                self.spawn(name)
        self.exits.extend(found)
        return found

    def _reason(self, name: str, pid: int) -> str:
        """The first line of the worker's log saying why it stopped (else its last line)."""
        try:
            lines = self.log(name).read_text(errors="replace").splitlines()[-2000:]
        except OSError:
            return ""
        own = [line for line in lines if f"[{pid}]" in line] or lines or [""]
        for marker in ("Crashed reason=", "crashed:", "Traceback", "CRITICAL"):
            found = [line for line in own if marker in line]
            if found:
                return found[0][-400:]
        return own[-1][-400:]

    def inject(self, fault: Fault, plan: FaultPlan) -> None:
        """Carry ``fault`` out (blocking until its last action is done); sets ``done`` and ``detail``."""
        if fault.kind == "kill":
            process = self.processes[fault.target]
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            fault.detail = f"pid {process.pid} killed"
            self.spawn(fault.target)
        elif fault.kind == "pause":
            process = self.processes[fault.target]
            seconds = plan.pause_seconds()
            os.kill(process.pid, signal.SIGSTOP)
            time.sleep(seconds)
            os.kill(process.pid, signal.SIGCONT)
            fault.detail = f"pid {process.pid} stopped {seconds:.1f} s"
        elif fault.kind == "broker":
            before = self.broker.bootstrap
            stopped = time.monotonic()
            self.broker.stop()
            down = time.monotonic() - stopped
            after = self.broker.start()
            if after != before:
                raise RuntimeError(f"the broker came back at {after}, not {before}: the workers cannot follow")
            fault.detail = f"stop {down:.1f} s, down {time.monotonic() - stopped:.1f} s in all"
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        fault.done = time.time()
        logger.info("fault %d %s on %s done: %s", fault.number, fault.kind, fault.target, fault.detail)

    def alive(self) -> int:
        return sum(process.poll() is None for process in self.processes.values())

    def stop(self) -> list[str]:
        """Stop every worker (SIGTERM, then SIGKILL) and the broker; return the problems seen."""
        problems = []
        for name, process in self.processes.items():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # in case the run was interrupted during a pause
            try:
                code = stop_process(process, timeout=60.0)
                if code not in (0, -signal.SIGTERM):
                    problems.append(f"worker {name} exited with code {code} on SIGTERM")
            except TimeoutError as exc:
                problems.append(f"worker {name}: {exc}")
        self.broker.stop()
        return problems
