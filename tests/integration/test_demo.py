"""`make demo` end to end (smaller): it prints its summary, writes the report, and stops what it started."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka


def test_demo_runs_the_whole_job_and_leaves_nothing_running(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ratewarden.cli", "demo", "--users", "80", "--minutes", "4"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for expected in ("decisions", "top offenders", "POST /requests as client-1", "429", "wrote flags.csv"):
        assert expected in out, expected
    report = tmp_path / "var/demo/report"
    for name in ("flags.csv", "flags.parquet", "requests_per_minute.png", "top_ips_by_score.png", "verdict_mix.png"):
        assert (report / name).stat().st_size > 0, name
    assert not _processes_mentioning(str(tmp_path)), "the demo left processes running"


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line or environment mention ``text`` (broker, worker, gateway)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            except OSError:
                continue
            if text.encode() in blob:
                found.append(int(entry.name))
    return found
