"""The default worker (all roles) feeds its history and first analytics stage in process: it serves the
history and publishes the per-IP partials of the decisions it made, without reading the decisions topic.
Split into a limiter worker and a history + analytics worker, the same comes from reading the topic."""

import math
import socket
import time
from collections import Counter

import httpx
import msgspec
import pytest
from kafka import KafkaAdminClient

from ratewarden.service_cli import roles_env
from ratewarden.processes import start_worker
from ratewarden.synth import synthetic_trace
from schemas.flags import FeaturesWatermark, IpPartial
from schemas.users import HistoryOwner
from streams.history import partition_for

pytestmark = pytest.mark.kafka


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _folded(port: int, topic: str) -> dict[str, float]:
    """``ratewarden_folded_records_total`` of the worker for ``topic``, by source (fed / topic)."""
    out: Counter = Counter()
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith("ratewarden_folded_records_total{") and f'topic="{topic}"' in line:
            source = line.split('source="', 1)[1].split('"', 1)[0]
            out[source] += float(line.rsplit(" ", 1)[1])
    return dict(out)


@pytest.mark.parametrize(("guarantee", "split"), [("at_least_once", False), ("exactly_once", False),
                                                   ("at_least_once", True)])
def test_history_and_features_of_the_decisions_fed_in_process_or_read_from_the_topic(make_pipeline, guarantee, split):
    pipeline = make_pipeline(processing_guarantee=guarantee, history_max_count=10_000, analytics_idle=600)
    s = pipeline.settings
    events = synthetic_trace(users=40, minutes=3, seed=3)
    port = _free_port()
    log = pipeline.tmp_path / f"{s.app_id}-worker.log"
    if split:  # the readers' worker reports the metrics
        pipeline.workers.append(start_worker(s, log.with_suffix(".limiter.log"), **roles_env("limiter")))
        pipeline.workers.append(start_worker(s, log, metrics_port=port, **roles_env("history,analytics")))
    else:
        pipeline.workers.append(start_worker(s, log, metrics_port=port))
    decisions = {d.request_id: d for d in pipeline.replay(events)}  # read uncommitted: as soon as sent
    assert len(decisions) == len(events)
    deadline = time.monotonic() + 30
    while len(pipeline.read_topic(s.decisions_topic)) < len(events):  # exactly-once: committed by the next flush
        assert time.monotonic() < deadline, "the decisions were never committed"
        time.sleep(0.5)

    # History: each user's decisions, newest first, read (synced) from the partition's owner.
    decode_owner = msgspec.json.Decoder(HistoryOwner).decode
    deadline = time.monotonic() + 60
    while True:  # split: the readers' worker may still be joining its groups
        records = pipeline.read_topic(s.history_owners_topic)
        owners = {o.partition: o.url for o in map(decode_owner, (r.value for r in records))}
        if sorted(owners) == list(range(s.partitions)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(owners) == list(range(s.partitions)) and len(set(owners.values())) == 1
    for user in sorted({e.user_id for e in events})[:12]:
        partition = partition_for(user, s.partitions)
        answer = httpx.get(f"{owners[partition]}/history/{partition}",
                           params={"user_id": user, "limit": 1000, "wait": 20}, timeout=30)
        assert answer.status_code == 200, answer.text
        mine = sorted((e for e in events if e.user_id == user), key=lambda e: (e.ts, e.request_id), reverse=True)
        got = answer.json()["requests"]
        assert [(h["request_id"], h["verdict"]) for h in got] == [(e.request_id, decisions[e.request_id].verdict)
                                                                  for e in mine], user

    # Stage 1: the partials of every window closed in every partition count each request once.
    window, grace = s.analytics_window, s.analytics_grace
    newest = Counter()
    for e in events:
        p = partition_for(e.user_id, s.partitions)
        newest[p] = max(newest[p], e.ts)
    closed_until = math.floor((min(newest.values()) - grace) / window) * window
    expected = Counter(math.floor(e.ts / window) * window for e in events if e.ts < closed_until)
    assert len(expected) >= 1
    decode = msgspec.json.Decoder(IpPartial | FeaturesWatermark).decode
    deadline = time.monotonic() + 60
    while True:
        partials = [x for x in (decode(r.value) for r in pipeline.read_topic(s.ip_features_topic)) if type(x) is IpPartial]
        got = Counter()
        for partial in partials:
            if partial.window_start < closed_until:
                got[partial.window_start] += partial.requests
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got == expected

    # Fed, not read back: the history group never existed, stage 1's group only holds its commits.
    # Split: both read the topic in their groups.
    folded = _folded(port, s.decisions_topic)
    lag = [line for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines()
           if line.startswith("ratewarden_event_loop_lag_seconds_count")]
    assert len(lag) == 1 and float(lag[0].rsplit(" ", 1)[1]) > 0, lag  # the worker's loop probe, whatever its roles
    fed, read = (0, 2 * len(events)) if split else (2 * len(events), 0)
    assert folded.get("fed", 0) == fed and folded.get("topic", 0) >= read and folded.get("topic", 0) <= 2 * read, folded
    with KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers) as admin:
        groups = {g["group_id"] for g in admin.list_groups()}
        assert (f"{s.app_id}-history" in groups) is split and s.limiter_group in groups
        assert bool(admin.describe_groups([s.analytics_group])[s.analytics_group]["members"]) is split
        deadline = time.monotonic() + 30
        while True:  # stage 1 commits its progress every flush_interval
            offsets = admin.list_group_offsets({s.analytics_group: None})[s.analytics_group]
            committed = {tp.partition for tp in offsets if tp.topic == s.decisions_topic}
            if committed == set(range(s.partitions)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert committed == set(range(s.partitions))
