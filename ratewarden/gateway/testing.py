"""A whole stack on one broker for tests and benchmarks: private topics, users of every role, workers, a gateway."""

import subprocess
import time
import uuid
from pathlib import Path

import httpx

from agents.rules_file import load_rules
from ratewarden.control import publish_rules
from ratewarden.gateway.server import GatewayThread
from ratewarden.gateway.users import create_user
from ratewarden.processes import start_worker, stop_process
from schemas.users import ROLES
from streams.settings import Settings
from streams.topics import ensure_topics

__all__ = ["GatewayStack", "wait_until"]


def wait_until(probe, timeout: float = 60.0, what: str = "condition", interval: float = 0.1):
    """``probe()``'s first true result, polled every ``interval`` s; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(interval)
    return result


class GatewayStack:
    """``with GatewayStack(bootstrap, tmp) as stack:`` topics, one user per role (``<role>-1``), a worker, a gateway."""

    def __init__(self, bootstrap: str, tmp: Path, workers: int = 1, **overrides) -> None:
        base = Settings(kafka_bootstrap_servers=bootstrap, var_dir=tmp, partitions=4, default_limit=1000,
                        gateway_decision_timeout=10.0)
        self.settings = base.scoped(uuid.uuid4().hex[:8]).model_copy(update=overrides)
        self.tmp = tmp
        self.workers: dict[str, subprocess.Popen] = {}
        self._initial_workers = workers
        self.keys: dict[str, str] = {}
        self.gateway: GatewayThread | None = None

    def __enter__(self) -> "GatewayStack":
        try:
            ensure_topics(self.settings)
            self.keys = {role: create_user(f"{role}-1", role, self.settings)[1] for role in ROLES}
            for i in range(self._initial_workers):
                self.start_worker(f"w{i + 1}")
            self.gateway = GatewayThread(self.settings).start()
            if self._initial_workers:
                self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the rate limit service (a stack made with ``rls_grpc_port=0`` or a port)."""
        port = self.gateway.gateway.grpc_port
        assert port is not None, "no gRPC port: make the stack with rls_grpc_port=0"
        return f"{self.settings.rls_grpc_host}:{port}"

    def load_rules(self, text: str, timeout: float = 30.0) -> None:
        """Validate and publish a descriptor rules file; wait until the gateway applies every domain in it."""
        documents = load_rules(text)
        publish_rules(documents, self.settings)
        rules = self.gateway.gateway.rules
        wait_until(lambda: all(rules.document(d.domain) == d for d in documents), timeout, "rules applied")

    def client(self, role: str | None = None, **kwargs) -> httpx.Client:
        """An HTTP client with the key of ``role`` (``<role>-1``), or no key."""
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def start_worker(self, name: str, **overrides) -> subprocess.Popen:
        """A worker process; ``var_dir`` per worker (``tmp/<name>``), like workers on separate machines."""
        settings = self.settings.model_copy(update={"var_dir": self.tmp / name, **overrides})
        process = start_worker(settings, self.tmp / f"{name}.log")
        self.workers[name] = process
        return process

    def stop_worker(self, name: str) -> int:
        return stop_process(self.workers.pop(name))

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until a request gets a real decision and every partition's history has an owner."""
        deadline = time.monotonic() + timeout
        with self.client("admin") as client:
            while True:
                answer = client.post("/requests", json={"request_type": "warm-up"})
                owners = self.gateway.gateway.history.owners
                if answer.status_code == 200 and not answer.json()["fail_open"] and len(owners) == self.settings.partitions:
                    return
                dead = [name for name, p in self.workers.items() if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"stack not ready (workers exited: {dead}); see the logs in {self.tmp}")
                time.sleep(0.2)

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for name in list(self.workers):
            try:
                self.stop_worker(name)
            except TimeoutError:
                pass
