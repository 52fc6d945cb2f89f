"""Topics on a broker that does not auto-create them: whoever produces first makes sure they are right.

The session's broker runs with ``auto.create.topics.enable=false`` (as a production cluster should):
a replay started at once beside a worker on brand-new topics must still be decided in full, and a
wrongly partitioned topic must stop a worker with one line and status 1, not a traceback.
"""

import subprocess
import time
import uuid

import pytest
from kafka import KafkaAdminClient

from ratewarden.client import RequestPublisher
from ratewarden.processes import start_cli, start_worker, stop_process
from ratewarden.replay import write_trace
from ratewarden.synth import synthetic_trace
from streams.settings import Settings
from streams.topics import TopicsError

pytestmark = pytest.mark.kafka


def fresh_settings(bootstrap: str, tmp_path) -> Settings:
    """Scoped settings whose topics do not exist yet (nothing here creates them)."""
    base = Settings(kafka_bootstrap_servers=bootstrap, var_dir=tmp_path, partitions=4, analytics_enabled=False)
    return base.scoped(uuid.uuid4().hex[:8])


def wait_exit(process: subprocess.Popen, bound: float) -> int:
    try:
        return process.wait(bound)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"{process.args} still running after {bound:g} s") from None


def test_a_replay_started_at_once_beside_a_new_worker_on_a_fresh_broker_is_decided_in_full(kafka_bootstrap, tmp_path):
    settings = fresh_settings(kafka_bootstrap, tmp_path)
    trace = tmp_path / "trace.jsonl"
    n = write_trace(trace, synthetic_trace(users=50, minutes=1, seed=3))
    worker = start_worker(settings, tmp_path / "worker.log")
    replay = start_cli(settings, tmp_path / "replay.log", "replay", str(trace), "--out", str(tmp_path / "out.jsonl"))
    try:
        status = wait_exit(replay, 240)
        log = (tmp_path / "replay.log").read_text()
        assert status == 0, log
        assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == n
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        assert stop_process(worker) == 0
    worker_log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in worker_log and "AttributeError" not in worker_log, worker_log[-3000:]


def test_a_wrongly_partitioned_topic_stops_the_worker_with_one_line_and_status_1(kafka_bootstrap, tmp_path):
    settings = fresh_settings(kafka_bootstrap, tmp_path)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics({settings.requests_topic: {"num_partitions": 1, "replication_factor": 1}})
    finally:
        admin.close()
    started = time.monotonic()
    worker = start_worker(settings, tmp_path / "worker.log")
    assert wait_exit(worker, 120) == 1
    output = (tmp_path / "worker.log").read_text()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    others = [line for line in output.splitlines() if line.strip() and not line.startswith(("error:", "WARNING "))]
    assert len(errors) == 1 and others == [] and "Traceback" not in output, output
    assert f"topic {settings.requests_topic} has 1 partitions, expected 4" in errors[0]
    assert "ratewarden topics" in errors[0] and "RATEWARDEN_PARTITIONS=1" in errors[0]
    assert time.monotonic() - started < 120


def test_the_sdk_publisher_refuses_a_missing_topic_and_says_what_to_run(kafka_bootstrap, tmp_path):
    settings = fresh_settings(kafka_bootstrap, tmp_path)
    with pytest.raises(TopicsError, match=r"does not exist .*run `ratewarden topics`"):
        RequestPublisher(settings)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert settings.requests_topic not in admin.list_topics(), "the check must not create the topic"
    finally:
        admin.close()
