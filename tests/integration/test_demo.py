"""`make demo` end to end (smaller): it prints its summary, writes the report, and stops what it started;
with `--keep` (`make demo KEEP=1`) it serves the console until Ctrl-C, then stops everything too."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
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


def _lines(stream) -> queue.Queue:
    """The lines of ``stream`` as a reader thread gets them (None at the end)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue, pattern: str, seen: list[str], timeout: float) -> re.Match:
    """The first match of ``pattern`` in the next lines (each kept in ``seen``), within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {pattern!r} within {timeout:g} s:\n{''.join(seen)[-3000:]}") from None
        assert line is not None, f"the demo ended before printing {pattern!r}:\n{''.join(seen)[-3000:]}"
        seen.append(line)
        if found := re.search(pattern, line):
            return found


def test_demo_keep_serves_the_console_until_sigint_then_stops_every_child(tmp_path):
    demo = subprocess.Popen(
        [sys.executable, "-m", "ratewarden.cli", "demo", "--users", "60", "--minutes", "3", "--keep"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As a background job of a script starts it (SIGINT inherited ignored): Ctrl-C must work all the same.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    seen: list[str] = []
    try:
        lines = _lines(demo.stdout)
        url = _read_until(lines, r"^console: (http://127\.0\.0\.1:\d+/console/)$", seen, 600).group(1)
        analyst = _read_until(lines, r"^analyst key \(analyst-1\): (rw_\S+)$", seen, 10).group(1)
        admin = _read_until(lines, r"^admin key \(admin-1\): (rw_\S+)$", seen, 10).group(1)
        _read_until(lines, "Ctrl-C stops them", seen, 10)
        assert re.search(r"/console/ip/\d", "".join(seen)), "the report links no offender to the console"

        gateway = url.removesuffix("/console/")
        with httpx.Client(base_url=gateway, timeout=30) as browser:  # the printed key signs in to the console
            login = browser.get("/console/login")
            assert login.status_code == 200 and 'id="login-form"' in login.text, login.text[:500]
            csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
            signed_in = browser.post("/console/login", data={"csrf": csrf, "key": analyst})
            assert (signed_in.status_code, signed_in.headers.get("location")) == (303, "/console/")
        as_analyst, as_admin = ({"Authorization": f"Bearer {key}"} for key in (analyst, admin))
        assert httpx.get(gateway + "/blocklist", headers=as_analyst).status_code == 200
        assert httpx.get(gateway + "/limits", headers=as_analyst).status_code == 403  # admins only
        assert httpx.get(gateway + "/limits", headers=as_admin).status_code == 200
        children = _processes_mentioning(str(tmp_path))
        assert len(children) >= 2, f"broker and worker should be running: {children}"

        demo.send_signal(signal.SIGINT)
        _read_until(lines, "stopping the gateway", seen, 30)
        demo.send_signal(signal.SIGINT)  # an impatient second Ctrl-C: the stop goes on all the same
        assert demo.wait(120) == 0, "".join(seen)[-3000:]
    finally:  # on a failure too: SIGINT first, so the demo stops its children; SIGKILL would orphan them
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(120)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
    assert not _processes_mentioning(str(tmp_path)), "the demo left processes running"
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "login", timeout=5)
