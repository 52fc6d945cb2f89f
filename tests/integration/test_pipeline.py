"""The core pipeline on the real broker: requests -> `ratewarden worker` (Faust app) -> decisions."""

import math
import shutil
import time
from collections import Counter

import msgspec
import pytest

from ratewarden.control import block, set_limit, set_limits
from ratewarden.synth import synthetic_trace
from schemas.events import RequestEvent
from schemas.limits import BlocklistEntry, RateLimit

pytestmark = pytest.mark.kafka

T0 = 1_732_900_000.0
TA = 1_732_899_960.0  # a multiple of 60: the start of a window


def user_limit(i: int) -> RateLimit:
    return RateLimit(user_id=f"user-{i:05d}", limit=5 + (i * 7) % 60, window=(10.0, 30.0, 60.0)[i % 3])


def oracle(events: list[RequestEvent], limits: dict[str, RateLimit]) -> dict[str, str]:
    """Independent fixed-window oracle: in each (user, window) the first `limit` requests pass."""
    seen: Counter = Counter()
    verdicts = {}
    for event in sorted(events, key=lambda e: e.ts):  # the trace is in ts order; users keep their order
        limit = limits[event.user_id]
        window = (event.user_id, int(event.ts // limit.window))
        seen[window] += 1
        verdicts[event.request_id] = "allow" if seen[window] <= limit.limit else "throttle"
    return verdicts


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_twenty_thousand_events_match_the_fixed_window_oracle_with_one_decision_each(make_core_pipeline, guarantee):
    pipeline = make_core_pipeline(processing_guarantee=guarantee)
    limits = {limit.user_id: limit for limit in map(user_limit, range(200))}
    set_limits(list(limits.values()), pipeline.settings)
    events = synthetic_trace(users=200, minutes=3, seed=11)
    assert len(events) >= 20_000 and len({e.user_id for e in events}) == 200
    pipeline.start_worker()
    decisions = pipeline.replay(events)

    records = pipeline.read_topic(pipeline.settings.decisions_topic)
    per_request = Counter(msgspec.json.decode(r.value)["request_id"] for r in records)
    assert set(per_request) == {e.request_id for e in events}
    assert max(per_request.values()) == 1, "a request was decided twice"

    expected = oracle(events, limits)
    got = {d.request_id: d.verdict for d in decisions}
    assert got == expected
    allowed: Counter = Counter()
    requests: Counter = Counter()
    for event, decision in zip(events, decisions):
        key = (event.user_id, int(event.ts // limits[event.user_id].window))
        requests[key] += 1
        allowed[key] += decision.verdict == "allow"
    for key, n in requests.items():
        assert allowed[key] == min(n, limits[key[0]].limit), key
    throttled = [d for d in decisions if d.verdict == "throttle"]
    assert len(throttled) > 1000, "the workload must exercise throttling"
    for d in throttled:
        assert 0 < d.retry_after <= limits[d.user_id].window and math.isclose(d.ts_event + d.retry_after, d.reset_at, abs_tol=1e-3)


def test_limit_changed_through_the_compacted_topic_changes_later_decisions(make_core_pipeline):
    pipeline = make_core_pipeline(default_limit=100)
    pipeline.start_worker()
    burst = lambda start, n, tag: [  # noqa: E731 - a tiny local factory
        RequestEvent(f"{tag}-{i}", "alice", "203.0.113.7", "read", start + i * 0.01) for i in range(n)
    ]
    before = pipeline.replay(burst(T0, 10, "a"))
    assert [d.verdict for d in before] == ["allow"] * 10 and before[0].limit == 100

    set_limit(RateLimit(user_id="alice", limit=3, window=60.0), pipeline.settings)
    deadline = time.monotonic() + 30
    probe_ts = T0 + 600.0
    while True:  # the worker follows the topic live; wait until a decision shows the new limit
        probe = pipeline.replay([RequestEvent(f"probe-{probe_ts}", "alice", "203.0.113.7", "read", probe_ts)])[0]
        if probe.limit == 3:
            break
        assert time.monotonic() < deadline, "the new limit never reached the worker"
        probe_ts += 60.0
    after = pipeline.replay(burst(probe_ts + 60.0, 5, "b"))
    assert [d.verdict for d in after] == ["allow", "allow", "allow", "throttle", "throttle"]
    assert all(d.limit == 3 for d in after)


def test_sliding_shadow_typed_limits_and_blocklist_on_the_real_pipeline(make_core_pipeline):
    pipeline = make_core_pipeline(default_limit=100)
    set_limits(
        [
            RateLimit(user_id="slider", limit=4, window=60.0, algorithm="sliding"),
            RateLimit(user_id="shadowed", limit=2, window=60.0, shadow=True),
            RateLimit(user_id="typed", limit=2, window=60.0, request_type="login"),
        ],
        pipeline.settings,
    )
    block(BlocklistEntry(subject="198.51.100.66", kind="ip", reason="test"), pipeline.settings)
    block(BlocklistEntry(subject="banned", kind="user", reason="test", start=TA + 5, ttl=10), pipeline.settings)
    pipeline.start_worker()
    ev = lambda rid, user, ts, kind="read", ip="203.0.113.7": RequestEvent(rid, user, ip, kind, ts)  # noqa: E731
    events = [
        *(ev(f"s{i}", "slider", TA + i) for i in range(4)),
        ev("s4", "slider", TA + 65),  # previous window weighs 4 * 55/60 = 3.67 -> throttled
        ev("s5", "slider", TA + 116),  # 4 * 4/60 = 0.27 -> allowed
        *(ev(f"h{i}", "shadowed", TA + i) for i in range(3)),
        *(ev(f"t{i}", "typed", TA + i, "login") for i in range(3)),
        ev("t3", "typed", TA + 4, "read"),
        ev("ip0", "someone", TA, ip="198.51.100.66"),
        *(ev(f"b{i}", "banned", TA + i * 5) for i in range(5)),  # blocked in [TA+5, TA+15)
    ]
    by_id = {d.request_id: d for d in pipeline.replay(events)}
    assert [by_id[f"s{i}"].verdict for i in range(6)] == ["allow"] * 4 + ["throttle", "allow"]
    assert by_id["s4"].retry_after > 0
    assert [(by_id[f"h{i}"].verdict, by_id[f"h{i}"].shadow) for i in range(3)] == [
        ("allow", False), ("allow", False), ("allow", True)
    ]
    assert by_id["h2"].reason == "shadow:rate_limited"
    assert [by_id[f"t{i}"].verdict for i in range(4)] == ["allow", "allow", "throttle", "allow"]
    assert by_id["t2"].reason == "rate_limited_type"
    assert (by_id["ip0"].verdict, by_id["ip0"].reason) == ("block", "ip_blocked")
    assert [by_id[f"b{i}"].verdict for i in range(5)] == ["allow", "block", "block", "allow", "allow"]
    assert by_id["b1"].reason == "user_blocked"


def test_same_trace_into_fresh_state_gives_identical_verdicts(make_core_pipeline):
    events = synthetic_trace(users=150, minutes=2, seed=5)
    runs = []
    for _ in range(2):
        pipeline = make_core_pipeline(default_limit=40, default_algorithm="sliding")
        pipeline.start_worker()
        runs.append([(d.request_id, d.verdict, d.count, d.remaining, d.retry_after) for d in pipeline.replay(events)])
        pipeline.close()
    assert runs[0] == runs[1]
    assert Counter(v for _, v, *_ in runs[0])["throttle"] > 100


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_worker_that_lost_its_state_dir_restores_counts_from_the_changelog(make_core_pipeline, guarantee):
    events = synthetic_trace(users=100, minutes=2, seed=3)
    half = len(events) // 2
    baseline = make_core_pipeline(default_limit=50)
    baseline.start_worker()
    expected = baseline.replay(events)
    baseline.close()

    pipeline = make_core_pipeline(default_limit=50, processing_guarantee=guarantee)
    worker = pipeline.start_worker("first")
    first = pipeline.replay(events[:half])
    assert pipeline.stop_worker(worker) == 0
    shutil.rmtree(pipeline.settings.state_dir)  # the disk is gone: only the changelog remains
    pipeline.start_worker("second")
    second = pipeline.replay(events[half:])
    verdicts = lambda ds: [(d.request_id, d.verdict, d.count, d.remaining) for d in ds]  # noqa: E731
    assert verdicts(first + second) == verdicts(expected)
    assert sum(d.verdict == "throttle" for d in second) > 100, "the second half must depend on restored counts"
