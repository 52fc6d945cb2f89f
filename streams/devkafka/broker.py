"""A real single-node Apache Kafka (KRaft) run as a local JVM, plus client connection options.

Machines without Docker still have Java 17+ and Maven, so the broker is assembled from Maven Central
(the kafka-local notes recipe): :func:`ensure_jars` resolves the jars once into the
user cache, and :class:`LocalKafka` formats a data directory and runs ``kafka.Kafka`` on free loopback
ports. Data survives a stop/start of the same home; the ports may change (the previous ones are reused
when still free). Client connection options live in
:mod:`streams.kafka_config`.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from streams.devkafka.jars import KAFKA_VERSION, LOG4J_VERSION, ensure_jars, tail
from streams.devkafka.tls import SaslSsl, ensure_tls_files, sasl_ssl_properties, upsert_scram_user


__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "LocalKafka",
    "SaslSsl",
    "ensure_jars",
    "local_home",
]

logger = logging.getLogger(__name__)

_LOG4J2 = """status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRefs = stdout
rootLogger.appenderRef.stdout.ref = STDOUT
"""

_SERVER = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners={client}PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}
advertised.listeners={client}PLAINTEXT://127.0.0.1:{broker}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{client_protocol}
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
log.cleaner.dedupe.buffer.size=16777216
auto.create.topics.enable=false
"""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM does: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) Kafka broker JVM."""
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            return b"kafka.Kafka" in (proc / "cmdline").read_bytes()
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if a broker at ``bootstrap`` answers a DescribeCluster request with at least one broker."""
    from kafka.admin import KafkaAdminClient

    host, _, port = bootstrap.rpartition(":")
    try:  # a plain connect first: quiet and fast while the JVM is still starting
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    ms = max(int(timeout * 1000), 100)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ms, bootstrap_timeout_ms=ms)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except Exception:  # noqa: BLE001
        return False
    finally:
        admin.close()


class LocalKafka:
    """A single-node KRaft broker+controller JVM whose files (config, data, pid, log) live in ``home``.

    With ``sasl_ssl`` the bootstrap address is a SASL_SSL listener (SCRAM-SHA-512, a certificate from
    the private CA at :attr:`ca_file`) that knows that one user; the PLAINTEXT listener stays on loopback
    for the broker itself, readiness probes and setting the SCRAM credential (streams.devkafka.tls).
    """

    def __init__(self, home: Path, heap_mb: int = 512, sasl_ssl: SaslSsl | None = None) -> None:
        self.home = Path(home).absolute()
        self.heap_mb = heap_mb
        self.sasl_ssl = sasl_ssl
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        secured = f", sasl_ssl=user {self.sasl_ssl.username!r}" if self.sasl_ssl else ""
        return f"LocalKafka(home={str(self.home)!r}, heap_mb={self.heap_mb}{secured})"

    @property
    def ca_file(self) -> Path:
        """The CA certificate a client of the SASL_SSL listener trusts (``RATEWARDEN_KAFKA_SSL_CAFILE``)."""
        return self.home / "tls" / "ca.pem"

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def bootstrap(self) -> str:
        """The recorded ``127.0.0.1:PORT`` of the started broker (no liveness check; see :meth:`status`)."""
        try:
            return (self.home / "bootstrap").read_text().strip()
        except FileNotFoundError:
            raise RuntimeError(f"{self!r} has not been started") from None

    def _probe_address(self) -> str:
        """The loopback PLAINTEXT listener: the bootstrap itself unless the broker runs SASL_SSL."""
        try:
            return (self.home / "probe").read_text().strip()
        except FileNotFoundError:
            return self.bootstrap

    def _pid(self) -> int | None:
        try:
            return int((self.home / "broker.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def status(self) -> str | None:
        """The bootstrap address if the broker process is alive and answers, else None."""
        pid = self._pid()
        if pid is None or not _pid_alive(pid):
            return None
        try:
            bootstrap = self.bootstrap
        except RuntimeError:
            return None
        return bootstrap if _broker_answers(self._probe_address()) else None

    def is_running(self) -> bool:
        return self.status() is not None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _ports(self, n: int) -> list[int]:
        """``n`` distinct free ports: the previous ones when all still free (broker, controller[, SASL_SSL])."""
        try:
            ports = [int(p) for p in (self.home / "ports").read_text().split()]
            if len(ports) == n and len(set(ports)) == n and all(_port_free(p) for p in ports):
                return ports
        except (FileNotFoundError, ValueError):
            pass
        ports = _free_ports(n)
        _write_atomic(self.home / "ports", " ".join(map(str, ports)) + "\n")
        return ports

    def _server_properties(self, ports: list[int]) -> str:
        broker, controller, *secure = ports
        text = _SERVER.format(broker=broker, controller=controller, data=self.home / "data",
                              client="".join(f"SASL_SSL://127.0.0.1:{p}," for p in secure),
                              client_protocol=",SASL_SSL:SASL_SSL" if secure else "")
        if self.sasl_ssl is not None:
            text += sasl_ssl_properties(ensure_tls_files(self.home / "tls"))
        return text

    def _format(self, lib: Path) -> None:
        if (self.home / "data" / "meta.properties").is_file():
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):  # StorageTool would parse a leading '-' as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        cmd = ["java", "-cp", f"{lib}/*", "kafka.tools.StorageTool", "format", "-t", cluster_id,
               "-c", str(self.home / "server.properties"), "--ignore-formatted"]
        proc = subprocess.run(cmd, cwd=self.home, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed (exit {proc.returncode}):\n"
                               f"{tail(proc.stdout + proc.stderr)}")
        logger.info("formatted Kafka storage in %s (cluster id %s)", self.home / "data", cluster_id)

    def start(self, timeout: float = 90.0) -> str:
        """Start the broker (or find it running) and return its bootstrap ``127.0.0.1:PORT``."""
        deadline = time.monotonic() + timeout
        with self._locked():
            pid = self._pid()
            if pid is not None and _pid_alive(pid):
                logger.info("Kafka already running in %s (pid %d)", self.home, pid)
                return self._ready_for_clients(self._wait_ready(pid, deadline))
            self._clear_run_files()
            lib = ensure_jars()
            ports = self._ports(2 if self.sasl_ssl is None else 3)
            _write_atomic(self.home / "server.properties", self._server_properties(ports))
            _write_atomic(self.home / "log4j2.properties", _LOG4J2)
            self._format(lib)
            if self.log_file.exists():
                os.replace(self.log_file, self.log_file.with_suffix(".log.1"))
            cmd = ["java", f"-Xms{min(256, self.heap_mb)}m", f"-Xmx{self.heap_mb}m",
                   f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                   "-cp", f"{lib}/*", "kafka.Kafka", str(self.home / "server.properties")]
            with open(self.log_file, "wb") as log:
                self._proc = subprocess.Popen(cmd, cwd=self.home, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True)
            _write_atomic(self.home / "broker.pid", f"{self._proc.pid}\n")
            if self.sasl_ssl is not None:
                _write_atomic(self.home / "probe", f"127.0.0.1:{ports[0]}\n")
            _write_atomic(self.home / "bootstrap", f"127.0.0.1:{ports[2 if self.sasl_ssl else 0]}\n")
            logger.info("started Kafka %s in %s (pid %d, %s)", KAFKA_VERSION, self.home, self._proc.pid,
                        self.bootstrap)
            return self._ready_for_clients(self._wait_ready(self._proc.pid, deadline))

    def _ready_for_clients(self, bootstrap: str) -> str:
        """Set the SCRAM user's credential before anyone is handed the SASL_SSL bootstrap."""
        if self.sasl_ssl is not None:
            upsert_scram_user(self._probe_address(), self.sasl_ssl)
        return bootstrap

    def _wait_ready(self, pid: int, deadline: float) -> str:
        bootstrap, probe = self.bootstrap, self._probe_address()
        while True:
            ours = self._proc is not None and self._proc.pid == pid
            if (self._proc.poll() is not None) if ours else not _pid_alive(pid):
                self._clear_run_files()
                raise RuntimeError(f"Kafka broker (pid {pid}) exited during startup; {self.log_file} ends:\n"
                                   f"{self._logtail()}")
            remaining = deadline - time.monotonic()
            if _broker_answers(probe, timeout=min(2.0, max(remaining, 0.1))):
                return bootstrap
            if remaining <= 0:
                tail = self._logtail()
                if ours:  # never kill a broker another process is still starting
                    self._stop_locked(10.0)
                raise RuntimeError(f"Kafka broker at {bootstrap} not ready in time; {self.log_file} ends:\n{tail}")
            time.sleep(0.2)

    def _logtail(self) -> str:
        try:
            return tail(self.log_file.read_bytes())
        except FileNotFoundError:
            return "(no broker.log)"

    def _clear_run_files(self) -> None:
        for name in ("broker.pid", "bootstrap", "probe"):
            (self.home / name).unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the broker, SIGKILL it after ``timeout`` seconds; True if a broker was running."""
        with self._locked():
            return self._stop_locked(timeout)

    def _stop_locked(self, timeout: float) -> bool:
        pid = self._pid()
        stopped = False
        if pid is not None and _pid_alive(pid):
            logger.info("stopping Kafka in %s (pid %d)", self.home, pid)
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                logger.warning("Kafka (pid %d) ignored SIGTERM for %.0fs; killing it", pid, timeout)
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
            stopped = True
        if self._proc is not None and self._proc.poll() is not None:  # also reaps a zombie child
            self._proc = None
        self._clear_run_files()
        return stopped

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


def local_home(var_dir: Path) -> Path:
    """Where ``ratewarden kafka start`` keeps the local broker for a given ``var_dir``."""
    return Path(var_dir) / "kafka"
