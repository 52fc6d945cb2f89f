"""Shared pytest fixtures: one real Kafka broker per test session, and pipelines on private topics."""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratewarden.client import read_topic_records
from ratewarden.processes import start_worker, stop_process
from ratewarden.replay import replay
from streams.devkafka.broker import LocalKafka
from streams.settings import Settings
from streams.topics import ensure_topics

logger = logging.getLogger(__name__)


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no SDK, no socket, no engine: all mean "no Docker"
        return False


def _announce(config: pytest.Config, message: str) -> None:
    logger.info("%s", message)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # show it even though output is captured
            reporter.write_line(f"[kafka] {message}")


@pytest.fixture(scope="session")
def _kafka_session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, LocalKafka | None]]:
    """(bootstrap, LocalKafka or None): env KAFKA_BOOTSTRAP_SERVERS, else Docker, else a local JVM broker."""
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        _announce(request.config, f"using KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        yield bootstrap, None
    elif _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        container = (
            KafkaContainer()
            .with_kraft()
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        )
        try:
            container.start(timeout=120)
            bootstrap = container.get_bootstrap_server()
            _announce(request.config, f"using a testcontainers Kafka at {bootstrap}")
            yield bootstrap, None
        finally:
            container.stop()
    else:
        broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
        try:
            bootstrap = broker.start()
            _announce(request.config, f"using a local JVM Kafka at {bootstrap} ({broker.home})")
            yield bootstrap, broker
        finally:
            broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_session: tuple[str, LocalKafka | None]) -> str:
    """Bootstrap servers of the session's real Kafka broker."""
    return _kafka_session[0]


@pytest.fixture(scope="session")
def local_kafka(_kafka_session: tuple[str, LocalKafka | None]) -> LocalKafka | None:
    """The session's LocalKafka (for broker restarts), or None when the broker is external or in Docker."""
    return _kafka_session[1]


class Pipeline:
    """Fresh topics and state for one test; workers run as real `ratewarden worker` processes."""

    def __init__(self, bootstrap: str, tmp_path: Path, **overrides) -> None:
        base = Settings(kafka_bootstrap_servers=bootstrap, var_dir=tmp_path, partitions=4, default_limit=1000)
        self.settings = base.scoped(uuid.uuid4().hex[:8]).model_copy(update=overrides)
        self.tmp_path = tmp_path
        self.workers: list[subprocess.Popen] = []
        ensure_topics(self.settings)

    def start_worker(self, name: str = "worker", **extra_env: str) -> subprocess.Popen:
        log = self.tmp_path / f"{self.settings.app_id}-{name}.log"
        process = start_worker(self.settings, log, **extra_env)
        self.workers.append(process)
        return process

    def stop_worker(self, process: subprocess.Popen, timeout: float = 60.0) -> int:
        """Graceful stop (SIGTERM): the worker flushes state and offsets before it exits."""
        return stop_process(process, timeout)

    def replay(self, events, timeout: float = 90.0):
        try:
            return replay(events, self.settings, timeout=timeout, show_progress=False)
        except Exception:
            dead = [p.args for p in self.workers if p.poll() not in (None, 0)]
            if dead:
                raise AssertionError(f"a worker died; see the *.log files in {self.tmp_path}") from None
            raise

    def read_topic(self, topic: str) -> list:
        """Every committed record of ``topic`` from the beginning to the current end (read_committed)."""
        return read_topic_records(self.settings, topic, isolation_level="read_committed")

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def make_pipeline(kafka_bootstrap, tmp_path):
    """Factory: ``make_pipeline(**settings_overrides)``; every worker it started is stopped after the test."""
    pipelines: list[Pipeline] = []

    def factory(**overrides) -> Pipeline:
        pipeline = Pipeline(kafka_bootstrap, tmp_path, **overrides)
        pipelines.append(pipeline)
        return pipeline

    yield factory
    for pipeline in pipelines:
        pipeline.close()


@pytest.fixture
def make_core_pipeline(make_pipeline):
    """A pipeline without automatic IP bans, so verdicts depend on the limiter alone."""
    return lambda **overrides: make_pipeline(**{"analytics_enabled": False, **overrides})
