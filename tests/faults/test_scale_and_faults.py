"""Several workers, exactly-once decisions, kill -9, broker restart, rebalance, fuzzed input.

Each test drives 100,000 events through workers in ``exactly_once`` mode on 8 partitions and
checks, reading the decisions topic read_committed: exactly one decision per request_id, and the
allowed count per (user, fixed window) equals min(requests, limit) — so never above the limit.
"""

import os
import signal
import time
from collections import Counter

import msgspec
import pytest

from ratewarden.client import DecisionSubscriber, RequestPublisher
from ratewarden.control import set_limits
from schemas.events import RequestEvent
from schemas.limits import RateLimit
from streams.devkafka.broker import LocalKafka

pytestmark = pytest.mark.kafka

USERS = 1000
WINDOW = 10.0


def workload(n: int = 100_000, start: float = 1_732_900_000.0) -> tuple[list[RequestEvent], list[RateLimit]]:
    """n events from USERS users over n/1000 s of event time; limits 5..44 per 10 s window."""
    events = [
        RequestEvent(f"r{i}", f"u{(i * 7919) % USERS}", f"198.51.100.{i % 200 + 1}", "read", start + i / 1000.0)
        for i in range(n)
    ]
    limits = [RateLimit(user_id=f"u{u}", limit=5 + u % 40, window=WINDOW) for u in range(USERS)]
    return events, limits


def drive(pipeline, events, hooks: dict[int, callable], timeout: float = 240.0) -> list[dict]:
    """Publish all events; call hooks[k]() once k decisions are committed; return committed decisions."""
    wanted = {e.request_id for e in events}
    seen: set[str] = set()
    with DecisionSubscriber(pipeline.settings, isolation_level="read_committed") as subscriber:
        with RequestPublisher(pipeline.settings) as publisher:
            publisher.publish_many(events)
        deadline = time.monotonic() + timeout
        pending = sorted(hooks)
        while len(seen) < len(wanted):
            assert time.monotonic() < deadline, f"only {len(seen)} of {len(wanted)} decided in time"
            seen.update(d.request_id for d in subscriber.poll(0.5))
            while pending and len(seen) >= pending[0]:
                hooks[pending.pop(0)]()
    return [msgspec.json.decode(r.value) for r in pipeline.read_topic(pipeline.settings.decisions_topic)]


def check_exactly_once(events, limits, decisions) -> None:
    per_request = Counter(d["request_id"] for d in decisions)
    assert set(per_request) == {e.request_id for e in events}
    duplicates = [rid for rid, n in per_request.items() if n > 1]
    assert not duplicates, f"{len(duplicates)} requests decided twice, e.g. {duplicates[:3]}"
    limit_of = {x.user_id: x.limit for x in limits}
    requests, allowed = Counter(), Counter()
    for d in decisions:
        key = (d["user_id"], int(d["ts_event"] // WINDOW))
        requests[key] += 1
        allowed[key] += d["verdict"] == "allow"
    over = [k for k in requests if allowed[k] > limit_of[k[0]]]
    assert not over, f"allowed above the limit in {len(over)} windows, e.g. {over[:3]}"
    wrong = [k for k in requests if allowed[k] != min(requests[k], limit_of[k[0]])]
    assert not wrong, f"{len(wrong)} windows counted wrong, e.g. {wrong[:3]}"


@pytest.fixture
def eos_pipeline(make_core_pipeline):
    def factory(**overrides):
        pipeline = make_core_pipeline(partitions=8, processing_guarantee="exactly_once", **overrides)
        return pipeline

    return factory


def two_workers(eos_pipeline, **overrides):
    """An exactly-once pipeline with the workload's limits set and workers "a" and "b" started."""
    pipeline = eos_pipeline(**overrides)
    events, limits = workload()
    set_limits(limits, pipeline.settings)
    return pipeline, events, limits, (pipeline.start_worker("a"), pipeline.start_worker("b"))


def test_two_workers_share_eight_partitions_exactly_once(eos_pipeline):
    pipeline, events, limits, _ = two_workers(eos_pipeline)
    check_exactly_once(events, limits, drive(pipeline, events, {}))


def test_kill_minus_nine_of_one_worker_mid_replay(eos_pipeline):
    pipeline, events, limits, (victim, _) = two_workers(eos_pipeline)
    killed_at: list[float] = []

    def kill() -> None:
        os.kill(victim.pid, signal.SIGKILL)
        killed_at.append(time.monotonic())

    decisions = drive(pipeline, events, {30_000: kill})
    recovery = time.monotonic() - killed_at[0]
    print(f"\nkill -9 at 30,000 committed decisions; all 100,000 committed {recovery:.1f} s after the kill")
    assert victim.wait(5) == -signal.SIGKILL
    check_exactly_once(events, limits, decisions)


def test_third_worker_joining_mid_replay(eos_pipeline):
    pipeline, events, limits, _ = two_workers(eos_pipeline)
    decisions = drive(pipeline, events, {20_000: lambda: pipeline.start_worker("c")})
    check_exactly_once(events, limits, decisions)


def test_broker_stopped_and_restarted_mid_replay(eos_pipeline, tmp_path):
    broker = LocalKafka(tmp_path / "own-kafka")
    bootstrap = broker.start()
    try:
        pipeline, events, limits, _ = two_workers(eos_pipeline, kafka_bootstrap_servers=bootstrap)

        def bounce() -> None:
            broker.stop()
            assert broker.start() == bootstrap, "the broker came back on another port"

        check_exactly_once(events, limits, drive(pipeline, events, {25_000: bounce}))
    finally:
        broker.stop()  # the make_pipeline fixture stops the workers
