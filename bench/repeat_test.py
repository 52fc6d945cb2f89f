"""Run one test many times in a row while CPU burners keep every core busy: is it flaky under load?

    python bench/repeat_test.py tests/integration/test_analytics_restart.py --runs 20 --burners 2

Each run is a fresh ``pytest`` process (its own broker, topics and workers); the burners are plain
busy loops in processes of their own, started before the first run and stopped after the last. The
script prints each run's outcome and time, a summary, and exits non-zero if any run failed. The
logs of failed runs are kept in ``--logs``.
"""

import argparse
import multiprocessing
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]


def _burn() -> None:
    while True:
        pass


def run_once(test: str, log: Path) -> tuple[bool, float]:
    started = time.monotonic()
    with open(log, "wb") as out:
        status = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    return status == 0, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", help="a pytest node id or file")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--burners", type=int, default=multiprocessing.cpu_count(), help="busy-loop processes")
    parser.add_argument("--logs", type=Path, default=ROOT / "var" / "repeat-test")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    console = Console()
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.burners)]
    for burner in burners:
        burner.start()
    outcomes: list[tuple[bool, float]] = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task(f"{args.test} with {args.burners} CPU burners", total=args.runs)
            for run in range(1, args.runs + 1):
                log = args.logs / f"run-{run}.log"
                passed, seconds = run_once(args.test, log)
                outcomes.append((passed, seconds))
                progress.console.print(f"run {run:2d}: {'passed' if passed else '[red]FAILED[/red]'} in {seconds:.0f} s"
                                       + ("" if passed else f" (log: {log})"))
                if passed:
                    log.unlink()
                progress.advance(task)
    finally:
        for burner in burners:
            burner.terminate()
    failed = sum(not passed for passed, _ in outcomes)
    times = [seconds for _, seconds in outcomes]
    console.print(f"{len(outcomes) - failed} of {len(outcomes)} passed; run time median {statistics.median(times):.0f} s, "
                  f"min {min(times):.0f} s, max {max(times):.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
