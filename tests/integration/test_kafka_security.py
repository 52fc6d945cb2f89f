"""Worker, gateway and replay against a broker that requires SASL_SSL (SCRAM-SHA-512, a private CA).

The broker is a LocalKafka of this module only; every process gets its Kafka credentials through
``RATEWARDEN_KAFKA_*`` environment variables, as a deployment would.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from pydantic import SecretStr

from ratewarden.gateway.server import start_gateway_process
from ratewarden.gateway.users import create_user
from ratewarden.processes import start_cli, start_worker, stop_processes
from ratewarden.replay import write_trace
from schemas.decisions import Decision
from schemas.events import RequestEvent
from streams.devkafka.broker import LocalKafka, SaslSsl
from streams.settings import Settings
from streams.topics import ensure_topics

pytestmark = pytest.mark.kafka

USER = "ratewarden-app"
PASSWORD = "scram-" + uuid.uuid4().hex
EVENTS = 300


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """This module's own broker: SASL_SSL only for clients, one SCRAM user, stopped after the module."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka-sasl-ssl"), heap_mb=384,
                        sasl_ssl=SaslSsl(USER, SecretStr(PASSWORD)))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def secure_settings(broker: LocalKafka, tmp: Path, password: str = PASSWORD) -> Settings:
    return Settings(
        kafka_bootstrap_servers=broker.bootstrap, kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username=USER, kafka_sasl_password=password,
        kafka_ssl_cafile=broker.ca_file, var_dir=tmp, partitions=2, default_limit=1000,
        gateway_decision_timeout=10.0,
    ).scoped(uuid.uuid4().hex[:8])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_exit(process: subprocess.Popen, timeout: float) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{process.args} still running after {timeout:g} s") from None


def test_worker_gateway_and_replay_over_sasl_ssl(secure_kafka: LocalKafka, tmp_path: Path) -> None:
    settings = secure_settings(secure_kafka, tmp_path)
    ensure_topics(settings)
    _, key = create_user("admin-1", "admin", settings)
    port = free_port()
    worker = start_worker(settings, tmp_path / "worker.log")
    gateway = start_gateway_process(settings, tmp_path / "gateway.log", "127.0.0.1", port)
    try:
        now = time.time()
        events = [RequestEvent(f"r{i}", f"user-{i % 20}", f"198.51.100.{i % 7}", "read", now + i / 1000)
                  for i in range(EVENTS)]
        write_trace(tmp_path / "trace.jsonl", events)
        replay = start_cli(settings, tmp_path / "replay.log", "replay", str(tmp_path / "trace.jsonl"),
                           "--out", str(tmp_path / "decisions.jsonl"), "--timeout", "60")
        assert wait_exit(replay, 120) == 0, (tmp_path / "replay.log").read_text()
        decode = msgspec.json.Decoder(Decision).decode
        decisions = [decode(line) for line in (tmp_path / "decisions.jsonl").read_bytes().splitlines()]
        assert [d.request_id for d in decisions] == [e.request_id for e in events]
        assert {d.verdict for d in decisions} == {"allow"}  # 15 requests per user, limit 1000

        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                          timeout=15) as client:
            while True:  # until the gateway listens and has its consumers assigned
                assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()
                try:
                    answer = client.post("/requests", json={"request_type": "read", "user_id": "gw-user"})
                    if answer.status_code == 200 and not answer.json()["fail_open"]:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the gateway gave no real decision within 60 s"
                time.sleep(0.2)
        assert answer.json()["status"] == "ok"
    finally:
        stop_processes((gateway, worker), 30)  # both, even if one has to be killed
    for log in tmp_path.glob("*.log"):
        assert PASSWORD not in log.read_text(errors="replace"), f"the SASL password leaked into {log.name}"


@pytest.mark.parametrize("command", ["worker", "gateway", "replay"])
def test_wrong_password_fails_fast_naming_the_cause(secure_kafka: LocalKafka, tmp_path: Path, command: str) -> None:
    settings = secure_settings(secure_kafka, tmp_path, password="not-" + PASSWORD)
    trace = tmp_path / "trace.jsonl"
    write_trace(trace, [RequestEvent("r0", "u0", "198.51.100.1", "read", time.time())])
    args = {"worker": ["worker"], "gateway": ["gateway", "--port", str(free_port())], "replay": ["replay", str(trace)]}
    log = tmp_path / f"{command}.log"
    started = time.monotonic()
    status = wait_exit(start_cli(settings, log, *args[command]), 60)
    elapsed = time.monotonic() - started
    output = log.read_text()
    assert status == 1, output
    assert elapsed < 15, f"{command} took {elapsed:.1f} s to fail"
    assert output.strip().splitlines() == [
        f"error: Kafka authentication failed for user '{USER}' via SCRAM-SHA-512 at bootstrap "
        f"{secure_kafka.bootstrap}: Authentication failed during authentication due to invalid credentials with "
        "SASL mechanism SCRAM-SHA-512 (check RATEWARDEN_KAFKA_SASL_USERNAME and RATEWARDEN_KAFKA_SASL_PASSWORD)"
    ]
