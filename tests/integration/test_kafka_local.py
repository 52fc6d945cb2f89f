"""The local JVM Kafka broker and the Kafka connection helpers, against a real broker."""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from streams.kafka_config import aiokafka_options, faust_credentials, kafka_python_options, resolve_bootstrap
from streams.devkafka.broker import LocalKafka, local_home
from streams.settings import Settings

SECRET = "hunter2-" + uuid.uuid4().hex


@pytest.fixture
def no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "RATEWARDEN_KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)


def _create_topic(bootstrap: str, name: str, partitions: int) -> int:
    """Create ``name`` and return its partition count as the broker reports it."""
    with KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000) as admin:
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True)
        (topic,) = admin.describe_topics([name])
        return len(topic["partitions"])


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=15)
    finally:
        producer.close()


def _read_all(bootstrap: str, topic: str, expected: int, group_id: str | None = None) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        if group_id is None:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
        else:
            consumer.subscribe([topic])
        got: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while len(got) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got.extend((r.key, r.value) for r in batch)
        return got
    finally:
        consumer.close()


@pytest.mark.kafka
def test_session_broker_round_trip(kafka_bootstrap: str) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    assert _create_topic(kafka_bootstrap, topic, 3) == 3
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(12)]
    _produce(kafka_bootstrap, topic, records)
    got = _read_all(kafka_bootstrap, topic, len(records), group_id=f"g-{uuid.uuid4().hex[:8]}")
    assert sorted(got) == sorted(records)


@pytest.mark.kafka
def test_local_kafka_restart_keeps_topics(tmp_path: Path, no_kafka_env: None) -> None:
    broker = LocalKafka(local_home(tmp_path), heap_mb=384)
    try:
        bootstrap = broker.start()
        assert bootstrap.startswith("127.0.0.1:")
        assert broker.status() == bootstrap and broker.is_running() and broker.bootstrap == bootstrap
        assert resolve_bootstrap(Settings(var_dir=tmp_path)) == bootstrap
        assert broker.start() == bootstrap  # already running: no second JVM
        pid = int((broker.home / "broker.pid").read_text())

        assert _create_topic(bootstrap, "kept", 2) == 2
        _produce(bootstrap, "kept", [(b"a", b"survives restart")])

        assert broker.stop() is True
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert broker.status() is None and not broker.is_running()
        assert not (broker.home / "broker.pid").exists() and not (broker.home / "bootstrap").exists()
        assert broker.stop() is False

        bootstrap = broker.start()
        with KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000) as admin:
            assert "kept" in admin.list_topics()
        assert _read_all(bootstrap, "kept", 1) == [(b"a", b"survives restart")]
    finally:
        broker.stop()
    assert broker.status() is None


def test_resolve_bootstrap_explicit(tmp_path: Path, no_kafka_env: None) -> None:
    settings = Settings(kafka_bootstrap_servers="kafka-1:9092,kafka-2:9092", var_dir=tmp_path)
    assert resolve_bootstrap(settings) == "kafka-1:9092,kafka-2:9092"


def test_resolve_bootstrap_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    assert resolve_bootstrap(Settings(var_dir=tmp_path)) == "from-env:9092"


def test_resolve_bootstrap_nothing_running(tmp_path: Path, no_kafka_env: None) -> None:
    home = local_home(tmp_path)
    home.mkdir()
    (home / "broker.pid").write_text("999999999\n")  # stale pid file from a dead broker
    (home / "bootstrap").write_text("127.0.0.1:1\n")
    with pytest.raises(RuntimeError, match="no Kafka broker: run `ratewarden kafka start` or set KAFKA_BOOTSTRAP"):
        resolve_bootstrap(Settings(var_dir=tmp_path))


def _sasl_ssl_settings(tmp_path: Path) -> Settings:
    return Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="ratewarden",
        kafka_sasl_password=SECRET,
        kafka_ssl_cafile=tmp_path / "ca.pem",
        kafka_ssl_certfile=tmp_path / "client.pem",
        kafka_ssl_keyfile=tmp_path / "client.key",
    )


def test_kafka_python_options_hide_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _sasl_ssl_settings(tmp_path)
    with caplog.at_level(logging.DEBUG):
        opts = kafka_python_options(settings)
    assert opts == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ratewarden",
        "sasl_plain_password": SECRET,
        "ssl_cafile": str(tmp_path / "ca.pem"),
        "ssl_certfile": str(tmp_path / "client.pem"),
        "ssl_keyfile": str(tmp_path / "client.key"),
    }
    assert dict(**opts)["sasl_plain_password"] == SECRET  # survives ** unpacking
    assert caplog.records, "the options should be logged at DEBUG"
    for text in (repr(opts), str(opts), repr(settings), caplog.text):
        assert SECRET not in text


def test_plaintext_options_are_empty(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    assert kafka_python_options(settings) == {}
    assert aiokafka_options(settings) == {}


def test_aiokafka_options(caplog: pytest.LogCaptureFixture) -> None:
    import ssl

    sasl = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                    kafka_sasl_username="u", kafka_sasl_password=SECRET)
    with caplog.at_level(logging.DEBUG):
        opts = aiokafka_options(sasl)
    assert opts == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                    "sasl_plain_username": "u", "sasl_plain_password": SECRET}
    assert SECRET not in caplog.text and SECRET not in repr(opts)

    opts = aiokafka_options(Settings(kafka_security_protocol="SSL"))
    assert set(opts) == {"security_protocol", "ssl_context"}
    assert isinstance(opts["ssl_context"], ssl.SSLContext)


def test_faust_credentials(tmp_path: Path) -> None:
    import ssl

    import faust

    assert faust_credentials(Settings(var_dir=tmp_path)) is None
    creds = faust_credentials(Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                                       kafka_sasl_username="u", kafka_sasl_password=SECRET))
    assert isinstance(creds, faust.SASLCredentials) and isinstance(creds.ssl_context, ssl.SSLContext)
    assert (creds.protocol.value, creds.mechanism.value, creds.username) == ("SASL_SSL", "SCRAM-SHA-512", "u")
    assert SECRET not in repr(creds)
    assert isinstance(faust_credentials(Settings(kafka_security_protocol="SSL")), faust.SSLCredentials)
