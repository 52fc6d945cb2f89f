"""Serving the gateway: ``ratewarden gateway`` (uvicorn, optional TLS, ``--workers N`` processes), a thread
for tests, a subprocess for benchmarks.

Responses leave in one write: uvicorn's httptools protocol writes the status line and headers, then
the body, and uvloop sends each at once, so every answer cost two socket writes (two wake-ups of the
client; 12% of the gateway's samples under load, py-spy). :class:`CorkedHttpToolsProtocol` hands the
response cycle a transport that gathers what one turn of the event loop writes and sends it as one.

uvicorn's own ``X-Forwarded-For`` handling is off: the client IP is the connection's peer unless
the peer is one of the configured trusted proxies (``RATEWARDEN_GATEWAY_TRUSTED_PROXIES``).

With ``workers`` > 1 this process supervises that many gateway processes on the port, each with its
own SO_REUSEPORT socket and Gateway (:mod:`ratewarden.gateway.workers`).
"""

import asyncio
import logging
import subprocess
import threading
import time
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ratewarden.gateway.app import create_app
from ratewarden.gateway.workers import bind_tcp, supervise
from ratewarden.processes import start_cli
from streams.settings import Settings

__all__ = ["CorkedHttpToolsProtocol", "GatewayThread", "serve", "start_gateway_process", "uvicorn_config"]

logger = logging.getLogger(__name__)


class CorkedTransport:
    """A transport whose writes within one event-loop turn reach the socket as one write (at the turn's end,
    or before a close); everything else is the wrapped transport's."""

    __slots__ = ("_transport", "_loop", "_chunks")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop, self._chunks = transport, loop, []

    def write(self, data: bytes) -> None:
        if not self._chunks:
            self._loop.call_soon(self.flush)
        self._chunks.append(data)

    def flush(self) -> None:
        chunks, self._chunks = self._chunks, []
        if chunks and not self._transport.is_closing():
            self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CorkedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]


def uvicorn_config(settings: Settings, host: str, port: int, tls_cert: str | None = None,
                   tls_key: str | None = None, log_level: str = "info") -> uvicorn.Config:
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    return uvicorn.Config(
        create_app(settings), host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
        proxy_headers=False, server_header=False, access_log=False, log_level=log_level,
        lifespan="on", timeout_graceful_shutdown=5, loop="uvloop", http=CorkedHttpToolsProtocol,
    )


def serve(settings: Settings, host: str, port: int, tls_cert: str | None = None, tls_key: str | None = None,
          log_level: str = "info", workers: int = 1, reuse_port: bool = False) -> None:
    """Run the gateway until SIGINT/SIGTERM: in this process, or as ``workers`` processes on the port.

    ``reuse_port``: this process is one of several workers (it binds the port with SO_REUSEPORT).
    """
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    if workers > 1:
        if settings.gateway_reply_partition is not None:  # correct, but each reads all the others' replies
            logger.warning("all %d workers share reply partition %d: leave RATEWARDEN_GATEWAY_REPLY_PARTITION "
                           "unset and each picks its own", workers, settings.gateway_reply_partition)
        tls = ["--tls-cert", tls_cert, "--tls-key", tls_key] if tls_cert and tls_key else []
        return supervise(settings, host, port, workers, ["--loglevel", log_level, *tls])
    config = uvicorn_config(settings, host, port, tls_cert, tls_key, log_level)
    config.app.state.freeze_heap = True  # once started: full collections then skip the start-up heap
    server = uvicorn.Server(config)
    server.run(sockets=[bind_tcp(host, port, reuse_port=True)] if reuse_port else None)
    if not server.started:
        raise RuntimeError("the gateway did not start (see the log above)")


class GatewayThread:
    """The gateway on a free loopback port, served from a thread of this process (tests)."""

    def __init__(self, settings: Settings, tls_cert: str | None = None, tls_key: str | None = None) -> None:
        self.socket = bind_tcp("127.0.0.1", 0)
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
