"""The synchronous peer: envoyproxy/ratelimit (Go) with its counters in Redis, built and run on loopback.

    python bench/peers/envoy_ratelimit.py build          # go install service, client_cmd, ghz (once), print them
    python bench/peers/envoy_ratelimit.py run [--limit N] [--port P]   # start Redis + the service until Ctrl-C

Not a ratewarden dependency: ``build()`` (and ``build_client()``, ``build_ghz()``) run ``go install`` of
a pinned version once (``bench/peers/go_tools.py``: ``GOPATH=${RATEWARDEN_GOPATH:-$HOME/.cache/ratewarden/go}``,
a stamp file next to each binary); Redis and ``wrk`` come from Debian's
packages (``ensure_packages()``, shared in ``bench/debian_packages.py``, installs what ``shutil.which``
does not find, with ``apt-get``, and says so). ``EnvoyRateLimit`` starts ``redis-server`` (no persistence) and the service on free loopback
ports (``HOST``, ``GRPC_HOST`` and ``DEBUG_HOST`` are all ``127.0.0.1``: it listens on all interfaces
by default; ``grpc_target`` is its gRPC ``ShouldRateLimit``), with its rules YAML in a temporary
directory (``rules=`` a whole file, else one rule: ``user``, LIMIT per minute, ``rules_yaml()``),
and stops both by PID (SIGTERM, SIGKILL after a timeout). Call: ``POST /json`` with
``{"domain":"rw","descriptors":[{"entries":[{"key":"user","value":"u1"}]}]}``; 200 with
``"overallCode":"OK"``, 429 when over the limit. Several descriptors in one call are decided together
(one status each, one Redis pipeline): the peer's counterpart of ``POST /requests/batch``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.commands import interrupt_on_signals  # noqa: E402
from bench.debian_packages import ensure_packages  # noqa: E402  (re-exported: its callers import it from here)
from bench.peers.go_tools import RATELIMIT_VERSION, TOOLS, build_tool, gopath  # noqa: E402

__all__ = ["VERSION", "MODULE", "ensure_packages", "build", "build_client", "build_ghz", "gopath", "EnvoyRateLimit",
           "free_port", "rules_yaml"]

MODULE = TOOLS["service_cmd"].module
VERSION = RATELIMIT_VERSION


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(say: Callable[[str], None] = print) -> Path:
    """The service binary, built by ``go install`` into the cache the first time (several minutes)."""
    return build_tool("service_cmd", say)


def build_client(say: Callable[[str], None] = print) -> Path:
    """The reference's own gRPC client ``client_cmd`` (same commit as the service), built once."""
    return build_tool("client_cmd", say)


def build_ghz(say: Callable[[str], None] = print) -> Path:
    """The ``ghz`` gRPC load generator, built once."""
    return build_tool("ghz", say)


def rules_yaml(limit: int, domain: str = "rw") -> str:
    return (f"domain: {domain}\n"
            "descriptors:\n"
            "  - key: user\n"
            f"    rate_limit: {{unit: minute, requests_per_unit: {int(limit)}}}\n")


def _stop(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, SIGKILL after ``timeout`` (ratewarden.processes.stop_process; a kill is not an error here)."""
    from ratewarden.processes import stop_process

    if process is not None:
        try:
            stop_process(process, timeout)
        except TimeoutError:
            pass


class EnvoyRateLimit:
    """Redis and envoyproxy/ratelimit on free loopback ports, rules in ``workdir``; a context manager."""

    def __init__(self, binary: Path, workdir: Path, limit: int = 1_000_000_000, domain: str = "rw",
                 port: int | None = None, rules: str | None = None, grpc_port: int | None = None) -> None:
        """``rules``: a whole rules YAML (its ``domain`` wins over ``domain``) instead of one ``user`` rule."""
        if rules is not None:
            import yaml

            domain = str(yaml.safe_load(rules)["domain"])
        self.binary, self.workdir, self.limit, self.domain = binary, Path(workdir), limit, domain
        self.rules = rules if rules is not None else rules_yaml(limit, domain)
        self.port = port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.redis_port = free_port()
        self.redis: subprocess.Popen | None = None
        self.service: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        """``HOST:PORT`` of the gRPC ``ShouldRateLimit`` service (plaintext, no reflection)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self.redis, self.service) if p is not None]

    def __enter__(self) -> "EnvoyRateLimit":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_redis(timeout)
            self._start_service(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_redis(self, timeout: float) -> None:
        log = open(self.workdir / "redis.log", "ab")
        self.redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "", "--appendonly", "no",
             "--protected-mode", "yes", "--daemonize", "no", "--dir", str(self.workdir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.redis.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.redis.returncode}); see {self.workdir / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    def _start_service(self, timeout: float) -> None:
        runtime = self.workdir / "runtime"
        config = runtime / "ratelimit" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / f"{self.domain}.yaml").write_text(self.rules)
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")},
            "USE_STATSD": "false", "LOG_LEVEL": "warn", "REDIS_SOCKET_TYPE": "tcp",
            "REDIS_URL": f"127.0.0.1:{self.redis_port}", "RUNTIME_ROOT": str(runtime),
            "RUNTIME_SUBDIRECTORY": "ratelimit", "RUNTIME_WATCH_ROOT": "false",
            "HOST": "127.0.0.1", "PORT": str(self.port),
            "GRPC_HOST": "127.0.0.1", "GRPC_PORT": str(self.grpc_port),
            "DEBUG_HOST": "127.0.0.1", "DEBUG_PORT": str(free_port()),
        }
        log = open(self.workdir / "ratelimit.log", "ab")
        self.service = subprocess.Popen([str(self.binary)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        # A key no rule has: the answer proves the rules are loaded and counts nothing a caller might check.
        body = json.dumps({"domain": self.domain,
                           "descriptors": [{"entries": [{"key": "ratewarden_warm_up", "value": "1"}]}]})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                raise RuntimeError(f"ratelimit exited ({self.service.returncode}); see {self.workdir / 'ratelimit.log'}")
            try:
                request = urllib.request.Request(self.url + "/json", body.encode(), method="POST",
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200 and json.load(answer).get("overallCode") == "OK":
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"ratelimit did not answer /json; see {self.workdir / 'ratelimit.log'}")

    def stop(self) -> None:
        _stop(self.service)
        _stop(self.redis)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="install the packages, build the service, client_cmd and ghz (once); print them")
    run = sub.add_parser("run", help="start Redis and the service on loopback until Ctrl-C")
    run.add_argument("--limit", type=int, default=1_000_000_000, help="requests per user per minute")
    run.add_argument("--port", type=int, default=None, help="HTTP port (default: a free one)")
    args = parser.parse_args(argv)
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    ensure_packages(say, ("redis-server",) if args.command == "run" else ("redis-server", "wrk"))
    binary = build(say)
    if args.command == "build":
        print(binary, build_client(say), build_ghz(say), sep="\n")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="envoy-ratelimit-"))
    peer = EnvoyRateLimit(binary, workdir, args.limit, port=args.port)
    try:
        peer.start()
        print(f"envoyproxy/ratelimit at {peer.url}/json and gRPC {peer.grpc_target} "
              f"(Redis 127.0.0.1:{peer.redis_port}; PIDs {peer.pids}; "
              f"files in {workdir}); Ctrl-C stops both", flush=True)
        interrupt_on_signals(signal.SIGTERM)
        while all(p.poll() is None for p in (peer.redis, peer.service)):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
