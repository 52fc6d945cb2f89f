"""Serving the gateway: ``ratewarden gateway`` (uvicorn, optional TLS), a thread for tests, a subprocess for benchmarks.

uvicorn's own ``X-Forwarded-For`` handling is off: the client IP is the connection's peer unless
the peer is one of the configured trusted proxies (``RATEWARDEN_GATEWAY_TRUSTED_PROXIES``).
"""

import socket
import subprocess
import threading
import time
from pathlib import Path

import uvicorn

from ratewarden.gateway.app import create_app
from ratewarden.processes import start_cli
from streams.settings import Settings

__all__ = ["GatewayThread", "serve", "start_gateway_process", "uvicorn_config"]



def uvicorn_config(settings: Settings, host: str, port: int, tls_cert: str | None = None,
                   tls_key: str | None = None, log_level: str = "info") -> uvicorn.Config:
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    return uvicorn.Config(
        create_app(settings), host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
        proxy_headers=False, server_header=False, access_log=False, log_level=log_level,
        lifespan="on", timeout_graceful_shutdown=5, loop="uvloop", http="httptools",
    )


def serve(settings: Settings, host: str, port: int, tls_cert: str | None = None, tls_key: str | None = None,
          log_level: str = "info") -> None:
    """Run the gateway in this process until SIGINT/SIGTERM."""
    server = uvicorn.Server(uvicorn_config(settings, host, port, tls_cert, tls_key, log_level))
    server.run()
    if not server.started:
        raise RuntimeError("the gateway did not start (see the log above)")


class GatewayThread:
    """The gateway on a free loopback port, served from a thread of this process (tests)."""

    def __init__(self, settings: Settings, tls_cert: str | None = None, tls_key: str | None = None) -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so (else +40 ms per answer)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
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
