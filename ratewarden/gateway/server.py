"""Serving the gateway: ``ratewarden gateway`` (uvicorn, optional TLS, ``--workers N`` processes), a thread
for tests, a subprocess for benchmarks.

uvicorn's own ``X-Forwarded-For`` handling is off: the client IP is the connection's peer unless
the peer is one of the configured trusted proxies (``RATEWARDEN_GATEWAY_TRUSTED_PROXIES``).

With ``workers`` > 1, uvicorn's supervisor runs that many processes on one listening socket bound
here (it restarts a worker that dies, and stops them all on SIGINT/SIGTERM). Each worker builds its
app with :func:`ratewarden.gateway.app.create_app` from the environment's settings, so each has its
own Gateway: its own Kafka clients, tables and reply partition (chosen from its process id).
"""

import logging
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from ratewarden.gateway.app import create_app
from ratewarden.processes import start_cli
from streams.settings import Settings

__all__ = ["GatewayThread", "listen", "serve", "start_gateway_process", "uvicorn_config"]

logger = logging.getLogger(__name__)

#: The app factory every worker process calls (``--workers``).
FACTORY = "ratewarden.gateway.app:create_app"


def uvicorn_config(settings: Settings | None, host: str, port: int, tls_cert: str | None = None,
                   tls_key: str | None = None, log_level: str = "info", workers: int = 1) -> uvicorn.Config:
    """The server's options; ``settings`` None: the app factory (each worker reads the environment)."""
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    app: Any = FACTORY if settings is None else create_app(settings)
    return uvicorn.Config(
        app, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key, factory=settings is None,
        workers=workers, proxy_headers=False, server_header=False, access_log=False, log_level=log_level,
        lifespan="on", timeout_graceful_shutdown=5, loop="uvloop", http="httptools",
    )


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket. IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so
    (else +40 ms per answer: Nagle's algorithm against delayed ACKs)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def serve(settings: Settings, host: str, port: int, tls_cert: str | None = None, tls_key: str | None = None,
          log_level: str = "info", workers: int = 1) -> None:
    """Run the gateway (``workers`` processes) until SIGINT/SIGTERM."""
    if workers > 1:
        if settings.gateway_reply_partition is not None:  # correct, but each reads all the others' replies
            logger.warning("all %d workers share reply partition %d: leave RATEWARDEN_GATEWAY_REPLY_PARTITION "
                           "unset and each picks its own", workers, settings.gateway_reply_partition)
        config = uvicorn_config(None, host, port, tls_cert, tls_key, log_level, workers)
        sock = listen(host, port)
        logger.info("gateway on %s:%d with %d worker processes", host, port, workers)
        supervisor = Multiprocess(config, sockets=[sock])
        try:
            supervisor.run()
        finally:
            sock.close()
        if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
            raise RuntimeError("a gateway worker did not start (see the log above)")
        return
    server = uvicorn.Server(uvicorn_config(settings, host, port, tls_cert, tls_key, log_level))
    server.run()
    if not server.started:
        raise RuntimeError("the gateway did not start (see the log above)")


class GatewayThread:
    """The gateway on a free loopback port, served from a thread of this process (tests)."""

    def __init__(self, settings: Settings, tls_cert: str | None = None, tls_key: str | None = None) -> None:
        self.socket = listen("127.0.0.1", 0)
        self.port = self.socket.getsockname()[1]
        self.url = f"{'https' if tls_cert else 'http'}://127.0.0.1:{self.port}"
        config = uvicorn_config(settings, "127.0.0.1", self.port, tls_cert, tls_key, "warning")
        self.server = uvicorn.Server(config)
        self.app = config.app
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def gateway(self):
        return self.app.state.gateway

    def start(self, timeout: float = 60.0) -> "GatewayThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(30)
        self.socket.close()

    def __enter__(self) -> "GatewayThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_gateway_process(settings: Settings, log: Path, host: str = "127.0.0.1", port: int = 8080,
                          *extra_args: str) -> subprocess.Popen:
    """A ``ratewarden gateway`` process with ``settings`` (through its environment); stop it with stop_process."""
    return start_cli(settings, log, "gateway", "--host", host, "--port", str(port), *extra_args)
