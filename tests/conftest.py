"""Shared pytest fixtures: one real Kafka broker per test session."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from streams.kafka_local import LocalKafka

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
