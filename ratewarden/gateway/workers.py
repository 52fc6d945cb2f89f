"""``ratewarden gateway --workers N``: N gateway processes on one port, each with its own listening socket.

Each worker is a ``ratewarden gateway --reuse-port`` child with the parent's settings (through its
environment) and options; it binds the port with ``SO_REUSEPORT``, so the kernel spreads new
connections evenly over the workers by their addresses. (uvicorn's own ``--workers`` shares one
listening socket instead: measured here at 32 connections, one worker accepted 29 of them and the
other 3.) Each worker has its own Gateway: its own Kafka clients, tables and reply partition.

The parent binds the port first (without listening, so it takes no connections) so that port 0
means one free port for all, and holds it while the workers run. It stops them all on
SIGINT/SIGTERM, and stops them all and fails when one of them exits on its own (a supervisor such
as systemd or Kubernetes restarts the whole). Without ``RATEWARDEN_CONSOLE_SECRET`` the parent makes
one for its workers, so a console session signed by one is accepted by the others.
"""

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

from streams.settings import Settings

__all__ = ["bind_tcp", "supervise"]

logger = logging.getLogger(__name__)

#: Seconds a worker has to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 30.0


def bind_tcp(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port``. IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on
    sockets that say so (else +40 ms per answer: Nagle's algorithm against delayed ACKs)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("gateway worker %d did not stop in %.0f s; killed", child.pid, STOP_TIMEOUT)
            child.kill()
            child.wait()


def supervise(settings: Settings, host: str, port: int, workers: int, options: list[str]) -> None:
    """Run ``workers`` gateway processes on ``host:port`` until SIGINT/SIGTERM (``options``: their other
    ``ratewarden gateway`` arguments, e.g. TLS). RuntimeError if a worker exits on its own."""
    holder = bind_tcp(host, port, reuse_port=True)
    port = holder.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATEWARDEN_")} | settings.to_env()
    if "RATEWARDEN_CONSOLE_SECRET" not in env:  # one console session secret for all: any worker may get the next request
        env["RATEWARDEN_CONSOLE_SECRET"] = secrets.token_urlsafe(32)
    command = [sys.executable, "-m", "ratewarden.cli", "gateway", "--host", host, "--port", str(port),
               "--reuse-port", *options]
    stopping: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, frame: stopping.append(sig))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[subprocess.Popen] = []
    try:
        children = [subprocess.Popen(command, env=env) for _ in range(workers)]
        logger.warning("gateway on %s:%d: %d worker processes (%s)", host, port, workers,
                       ", ".join(str(c.pid) for c in children))
        while not stopping:
            exited = [c for c in children if c.poll() is not None]
            if exited:
                raise RuntimeError(f"gateway worker {exited[0].pid} exited with {exited[0].returncode}; "
                                   "all stopped (see the log above)")
            time.sleep(0.2)
        logger.warning("signal %d: stopping the gateway workers", stopping[0])
    finally:
        _stop(children)
        holder.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
