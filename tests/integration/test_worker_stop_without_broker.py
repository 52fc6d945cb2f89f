"""A worker whose broker has gone away still stops on SIGTERM, within a bound.

aiokafka waits for a broker without end in places (a commit looks for its group coordinator, a
producer's stop waits for delivery); every step of the worker's stop that talks to Kafka is bounded
(``streams.stopping``), so the worker exits instead of having to be killed. The broker is this
test's own: it is killed, and the session's broker serves every other test.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from ratewarden.gateway.testing import wait_until
from ratewarden.processes import start_worker, stop_processes
from streams.devkafka.broker import LocalKafka
from streams.settings import Settings
from streams.topics import ensure_topics

pytestmark = pytest.mark.kafka

#: Generous: the stop takes about 10 s with the broker gone (each Kafka step bounded at a few seconds).
STOP_BOUND = 45.0


def kill_broker(broker: LocalKafka) -> None:
    """SIGKILL, by the PID the broker's home records: gone without a word, as a crashed host would be."""
    os.kill(int((broker.home / "broker.pid").read_text()), signal.SIGKILL)


def test_a_worker_stops_on_sigterm_within_a_bound_after_its_broker_is_gone(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka", heap_mb=384)
    started = []
    try:
        settings = Settings(kafka_bootstrap_servers=broker.start(), var_dir=tmp_path, partitions=2,
                            default_limit=1000).scoped(uuid.uuid4().hex[:8])
        ensure_topics(settings)
        log = tmp_path / "worker.log"
        worker = start_worker(settings, log)
        started.append(worker)

        def running() -> bool:
            assert worker.poll() is None, f"the worker exited early; {log} ends:\n{log.read_text()[-3000:]}"
            text = log.read_text(errors="replace")
            return "[^Worker]: Ready" in text and "-limiter: assigned partitions" in text

        wait_until(running, 120, "the worker running with its partitions assigned", interval=0.5)
        kill_broker(broker)
        wait_until(lambda: "Connect call failed" in log.read_text(errors="replace"), 60,
                   "the worker noticing that the broker is gone", interval=0.2)

        began = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: worker.poll() is not None, STOP_BOUND, "the worker's exit after SIGTERM", interval=0.2)
        elapsed = time.monotonic() - began
        assert worker.returncode == 0, f"exit status {worker.returncode}; {log} ends:\n{log.read_text()[-3000:]}"
        print(f"worker exited {elapsed:.1f} s after SIGTERM")
    finally:
        try:
            stop_processes(started, 5)  # by PID; SIGKILL if the worker outlived its bound
        except TimeoutError:
            pass  # the assertion above already said so
        broker.stop()
