"""A pipeline on the session's real broker: unique topics, a worker subprocess, replay helpers."""

import subprocess
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from ratewarden.processes import start_worker, stop_process
from ratewarden.replay import replay
from streams.settings import Settings
from streams.topics import ensure_topics


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
        """Every record of ``topic`` from the beginning to the current end."""
        consumer = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, group_id=None)
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            records = []
            while any(consumer.position(tp) < end for tp, end in ends.items()):
                for batch in consumer.poll(timeout_ms=500).values():
                    records.extend(batch)
            return records
        finally:
            consumer.close()

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
