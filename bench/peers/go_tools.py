"""Go programs the benchmarks and the peer tests build from the Go module proxy, never vendored.

``build_tool(name)`` runs ``go install MODULE@VERSION`` with
``GOPATH=${RATEWARDEN_GOPATH:-$HOME/.cache/ratewarden/go}`` and ``GOFLAGS=-mod=mod`` the first time,
then returns the cached binary: a stamp file next to it (``bin/.ratewarden-<name>-stamp``) records the
version built, so a new pin in ``TOOLS`` rebuilds and an unchanged one costs nothing.

The tools:

* ``service_cmd``: envoyproxy/ratelimit, the rate limit service every Envoy-based proxy calls.
* ``client_cmd``: its own command-line gRPC client (``-dial_string HOST:PORT -domain D -descriptors k=v,...``),
  which prints the ``RateLimitResponse``: the reference's own view of a call, independent of our stubs.
* ``ghz``: a gRPC load generator (JSON report with ``--format json``); it needs a protoset for a server
  without reflection (``bench/peers/rls_protoset.py``).
* ``vegeta``: a constant-rate HTTP load generator (the gateway benchmark's half-peak runs:
  ``bench/gateway/vegeta.py``).

The first build downloads modules and compiles for minutes; the Go toolchain comes from PATH or
``/usr/local/go/bin/go``. ``parse_ghz`` reads ghz's JSON report (any service, any call).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, NamedTuple

__all__ = ["RATELIMIT_VERSION", "TOOLS", "GoTool", "GhzResult", "gopath", "go_command", "build_tool", "parse_ghz"]

#: The pinned envoyproxy/ratelimit commit (a pseudo-version of its main branch).
RATELIMIT_VERSION = "v1.4.1-0.20260122083618-3fb702589d36"


class GoTool(NamedTuple):
    module: str  # the package path ``go install`` builds
    version: str
    stamp: str  # the stamp file's name in GOPATH/bin


TOOLS = {
    "service_cmd": GoTool("github.com/envoyproxy/ratelimit/src/service_cmd", RATELIMIT_VERSION,
                          ".ratewarden-ratelimit-stamp"),  # the name older checkouts wrote: no rebuild
    "client_cmd": GoTool("github.com/envoyproxy/ratelimit/src/client_cmd", RATELIMIT_VERSION,
                         ".ratewarden-client_cmd-stamp"),
    "ghz": GoTool("github.com/bojand/ghz/cmd/ghz", "v0.93.0", ".ratewarden-ghz-stamp"),
    "vegeta": GoTool("github.com/tsenart/vegeta/v12", "v12.12.0", ".ratewarden-vegeta-stamp"),
}


def gopath() -> Path:
    return Path(os.environ.get("RATEWARDEN_GOPATH", Path.home() / ".cache" / "ratewarden" / "go"))


def go_command() -> str:
    """The ``go`` executable; RuntimeError with the way out when there is none."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise RuntimeError("no `go` on PATH: install Go (https://go.dev/dl/) to build the Go peers and tools")
    return go


def build_tool(name: str, say: Callable[[str], None] = print) -> Path:
    """The binary of ``TOOLS[name]``, built by ``go install`` into ``gopath()/bin`` the first time."""
    tool = TOOLS[name]
    root = gopath()
    binary = root / "bin" / name
    stamp = root / "bin" / tool.stamp
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == tool.version:
        return binary
    go = go_command()
    say(f"building {tool.module}@{tool.version} with go install into {root} (first time: minutes)")
    env = {**os.environ, "GOPATH": str(root), "GOFLAGS": "-mod=mod"}
    done = subprocess.run([go, "install", f"{tool.module}@{tool.version}"], capture_output=True, text=True, env=env)
    if done.returncode != 0 or not binary.exists():
        raise RuntimeError(f"go install {tool.module}@{tool.version} failed:\n{done.stderr[-3000:]}")
    stamp.write_text(tool.version + "\n")
    return binary


class GhzResult(NamedTuple):
    count: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int  # calls that did not end with gRPC status OK, except ``cut``
    statuses: dict[str, int]
    cut: int = 0  # in flight when a ``-z`` run ended: ghz closes the connection under them


#: ghz's errors for calls it cut itself at the end of a timed run (``endReason: timeout``).
_CUT = ("the client connection is closing", "transport is closing")


def parse_ghz(text: str) -> GhzResult:
    """ghz's ``--format json`` report: durations are nanoseconds, percentiles under ``latencyDistribution``.

    Errors come from ``errorDistribution`` (message -> calls); those ghz caused itself by closing the
    connection when a timed run ended are counted apart as ``cut``, not charged to the service."""
    report = json.loads(text)
    percentiles = {p["percentage"]: p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
    statuses = dict(report.get("statusCodeDistribution") or {})
    messages = report.get("errorDistribution") or {}
    cut = sum(n for message, n in messages.items()
              if report.get("endReason") == "timeout" and any(m in message for m in _CUT))
    errors = max(sum(n for code, n in statuses.items() if code != "OK"), sum(messages.values())) - cut
    return GhzResult(int(report.get("count", 0)), float(report.get("rps", 0.0)), percentiles.get(50),
                     percentiles.get(99), errors, statuses, cut)
