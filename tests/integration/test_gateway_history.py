"""GET /requests/{user_id}: complete and ordered while partitions move between two worker processes."""

import itertools
import time

import pytest

from ratewarden.gateway.testing import GatewayStack
from streams.history import partition_for

pytestmark = pytest.mark.kafka


def _two_users_per_partition(partitions: int = 4) -> list[str]:
    names = (f"hist-{i}" for i in itertools.count())
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    while any(len(users) < 2 for users in chosen.values()):
        name = next(names)
        if len(chosen[p := partition_for(name, partitions)]) < 2:
            chosen[p].append(name)
    return [user for users in chosen.values() for user in users]


USERS = _two_users_per_partition()


def read_all(client, user: str, page: int = 7) -> list[dict]:
    """The whole history through `limit`/`before` paging."""
    items, before = [], None
    while True:
        params = {"limit": page} | ({"before": before} if before is not None else {})
        answer = client.get(f"/requests/{user}", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["user_id"] == user and len(body["requests"]) <= page
        items += body["requests"]
        before = body["next_before"]
        if before is None:
            return items


def test_history_is_complete_and_ordered_across_two_workers_and_partition_moves(kafka_bootstrap, tmp_path):
    with GatewayStack(kafka_bootstrap, tmp_path, default_limit=25, default_window=3600) as stack:
        sent: dict[str, list[tuple[str, int]]] = {user: [] for user in USERS}
        owners_seen: dict[int, set[str]] = {p: set() for p in range(stack.settings.partitions)}
        counter = itertools.count()

        def burst(service, n: int) -> None:
            for user in USERS * n:
                answer = service.post("/requests", json={"request_type": f"t{next(counter)}", "user_id": user,
                                                         "ip": "192.0.2.8"})
                assert answer.status_code in (200, 429) and not answer.json().get("fail_open"), answer.text
                sent[user].append((answer.json()["request_id"], answer.status_code))
            for partition, owner in stack.gateway.gateway.history.owners.items():
                owners_seen[partition].add(owner.url)

        def burst_until(service, done, failure) -> None:
            """Send a request per user at a time until ``done()`` (at most 60 s; ``failure()`` says why not)."""
            wait = time.monotonic() + 60
            while not done():
                assert time.monotonic() < wait, failure()
                burst(service, 1)

        with stack.client("service") as service, stack.client("analyst") as analyst:
            burst(service, 4)                      # worker 1 decides and keeps every partition
            stack.start_worker("w2")               # its own disk, like another machine: it rebuilds from the topic
            owners = stack.gateway.gateway.history.owners
            burst_until(service, lambda: len({o.url for o in owners.values()}) >= 2,
                        lambda: "the second worker never took partitions")
            burst(service, 4)                      # both workers decide
            assert stack.stop_worker("w1") == 0    # everything moves to worker 2
            burst(service, 4)
            # until worker 2's ownership of every partition is announced
            burst_until(service, lambda: all(len(urls) >= 2 for urls in owners_seen.values()),
                        lambda: f"not every partition moved: {owners_seen}")
            kept = stack.settings.history_max_count  # the waits above send as long as they wait: maybe more
            for user in USERS:
                history = read_all(analyst, user)
                expected = list(reversed(sent[user]))[:kept]
                assert [h["request_id"] for h in history] == [rid for rid, _ in expected], (user, len(sent[user]))
                assert [h["verdict"] for h in history] == ["allow" if s == 200 else "throttle" for _, s in expected]
                assert [h["ts"] for h in history] == sorted((h["ts"] for h in history), reverse=True)
                assert {h["ip"] for h in history} == {"192.0.2.8"}
            assert any(s == 429 for user in USERS for _, s in sent[user]), "limits must have been reached"
