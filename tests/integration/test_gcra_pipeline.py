"""GCRA on the real broker: limits from the rules topic, decisions against an independent oracle
(across a restart that restores GCRA state from the changelog), and limits set from the CLI and the
HTTP API."""

import functools
import random
import shutil
import uuid

import pytest

from ratewarden.control import read_limits, set_limits
from ratewarden.gateway.testing import GatewayStack, wait_until
from ratewarden.processes import start_cli
from schemas.events import RequestEvent
from schemas.limits import RateLimit

pytestmark = pytest.mark.kafka

START_MS = 1_732_900_000_000


def gcra_oracle(events: list[RequestEvent], limits: dict[str, RateLimit]) -> dict[str, tuple]:
    """GCRA in exact integer milliseconds, written from the definition, per user in event order:
    allow iff max(TAT, ts) - ts <= tau; then TAT = max(TAT, ts) + T. Returns, per request,
    (verdict, remaining, retry_after in ms, reset_at in ms)."""
    tat: dict[str, int] = {}
    out = {}
    for event in events:
        limit = limits[event.user_id]
        interval = round(limit.window * 1000) // limit.limit  # the test picks windows that make T whole ms
        tau = interval * (limit.burst or 0)
        ts = round(event.ts * 1000)
        theoretical = max(tat.get(event.user_id, ts), ts)
        if theoretical - ts <= tau:
            tat[event.user_id] = theoretical + interval
            remaining = (tau + interval - (theoretical + interval - ts)) // interval
            out[event.request_id] = ("allow", remaining, 0, theoretical + interval)
        else:
            out[event.request_id] = ("throttle", 0, theoretical - tau - ts, theoretical)
    return out


def trace(users: int, per_user: int, seed: int) -> tuple[list[RequestEvent], dict[str, RateLimit]]:
    """Users with GCRA limits of whole-millisecond intervals, each sending clusters and pauses."""
    rng = random.Random(seed)
    limits, events = {}, []
    for u in range(users):
        user = f"g{u:03d}"
        rate, interval = rng.randint(2, 20), rng.choice([50, 100, 250, 1000])
        limits[user] = RateLimit(user_id=user, limit=rate, window=rate * interval / 1000, algorithm="gcra",
                                 burst=rng.choice([None, 0, 1, 3, 7]))
        ts = START_MS + rng.randint(0, 1000)
        for i in range(per_user):
            ts += rng.choice([0, 1, rng.randint(0, 20), rng.randint(0, interval), rng.randint(interval, 4 * interval)])
            events.append(RequestEvent(f"{user}-{i}", user, "203.0.113.7", "read", ts / 1000))
    events.sort(key=lambda e: e.ts)  # stable: each user's requests keep their order
    return events, limits


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_gcra_limits_from_the_rules_topic_match_an_independent_oracle_across_a_restart(make_core_pipeline, guarantee):
    events, limits = trace(users=60, per_user=80, seed=12)
    pipeline = make_core_pipeline(processing_guarantee=guarantee)
    set_limits(list(limits.values()), pipeline.settings)
    worker = pipeline.start_worker("first")
    half = len(events) // 2
    first = pipeline.replay(events[:half])
    assert pipeline.stop_worker(worker) == 0
    shutil.rmtree(pipeline.settings.state_dir)  # only the changelog holds the arrival times now
    pipeline.start_worker("second")
    second = pipeline.replay(events[half:])

    expected = gcra_oracle(events, limits)
    got = {d.request_id: (d.verdict, d.remaining, round(d.retry_after * 1000), round(d.reset_at * 1000))
           for d in first + second}
    assert got == expected
    verdicts = [v for v, *_ in expected.values()]
    assert verdicts.count("throttle") > 500 and verdicts.count("allow") > 1000, "the trace must exercise both"
    for d in first + second:
        assert d.limit == limits[d.user_id].limit and d.reset_at - d.window_start == pytest.approx(
            limits[d.user_id].window)
    later = {d.request_id for d in second if d.verdict == "throttle"}
    assert len(later) > 200, "the second half must depend on restored arrival times"


#: ``probe()``'s first true result, polled every 50 ms for at most 20 s.
wait_for = functools.partial(wait_until, timeout=20.0, interval=0.05)


def test_gcra_is_settable_from_the_http_api_and_the_cli(kafka_bootstrap, tmp_path):
    with GatewayStack(kafka_bootstrap, tmp_path) as stack, stack.client("service") as service, \
            stack.client("admin") as admin:
        submit = lambda user: service.post("/requests", json={"user_id": user, "ip": "203.0.113.9",  # noqa: E731
                                                              "request_type": "read"})

        # The HTTP API: 2 per hour (T = 1800 s), 4 extra at once.
        api_user = f"api-{uuid.uuid4().hex[:6]}"
        body = {"limit": 2, "window": 3600, "algorithm": "gcra", "burst": 4}
        put = admin.put(f"/limits/{api_user}", json=body)
        assert put.status_code == 200 and put.json() | body == put.json()
        assert admin.get(f"/limits/{api_user}").json() == put.json()
        wait_for(lambda: submit(api_user).headers["RateLimit-Policy"] == '"user";q=2;w=3600',
                 what="the gcra limit at the worker")  # this probe used one of the 5
        answers = [submit(api_user) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
        assert [a.headers["RateLimit"].split(";")[1] for a in answers] == ["r=3", "r=2", "r=1", "r=0", "r=0"]
        assert 1795 < answers[4].json()["retry_after"] <= 1800  # one interval after the burst, less the time spent
        assert admin.put(f"/limits/{api_user}", json={**body, "burst": -1}).status_code == 422

        # The CLI: 3 per 30 s (T = 10 s), 2 extra at once.
        cli_user = f"cli-{uuid.uuid4().hex[:6]}"
        cli = start_cli(stack.settings, tmp_path / "cli.log", "limits", "set", cli_user, "3", "--window", "30",
                        "--algorithm", "gcra", "--burst", "2")
        assert cli.wait(60) == 0, (tmp_path / "cli.log").read_text()
        stored = [x for x in read_limits(stack.settings) if x.user_id == cli_user]
        assert stored == [RateLimit(user_id=cli_user, limit=3, window=30.0, algorithm="gcra", burst=2)]
        wait_for(lambda: admin.get(f"/limits/{cli_user}").status_code == 200, what="the limit at the gateway")
        assert admin.get(f"/limits/{cli_user}").json()["burst"] == 2
        wait_for(lambda: submit(cli_user).headers["RateLimit-Policy"] == '"user";q=3;w=30',
                 what="the CLI's limit at the worker")
        answers = [submit(cli_user) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert 9.5 < answers[2].json()["retry_after"] <= 10.0
