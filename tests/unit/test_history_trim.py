"""Per-user trims of the request history: decided while writing when a user's entries come in order,
by a walk otherwise; either way reads see exactly the newest ``max_count`` and disk stays bounded."""

import random

import pytest

from streams.history import Decided, HistoryStore

T0 = 1_732_900_000.0


def on_disk(store: HistoryStore, user: str) -> list[bytes]:
    prefix = user.encode() + b"\x00"
    it, keys = store._db.iter(), []
    it.seek(prefix)
    while it.valid() and it.key().startswith(prefix):
        keys.append(it.key())
        it.next()
    return keys


@pytest.mark.parametrize("late_share", [0.0, 0.05, 0.5])
def test_reads_see_the_newest_entries_and_disk_stays_bounded(tmp_path, late_share):
    rng = random.Random(7)
    store = HistoryStore(tmp_path / "h", max_count=20, max_age=1e9)
    users = [f"u{i}" for i in range(5)]
    sent: dict[str, list[tuple[float, str]]] = {u: [] for u in users}
    clock, position = T0, 0
    for batch_no in range(40):
        batch = []
        for _ in range(rng.randint(1, 60)):
            user = rng.choice(users)
            clock += 0.01
            ts = round(clock - (rng.uniform(0, 5) if rng.random() < late_share else 0.0), 3)
            request_id = f"r{position + len(batch):06d}"
            batch.append(Decided(request_id, user, "198.51.100.7", "read", "allow", "within_limit", ts))
            sent[user].append((ts, request_id))
        position += len(batch)
        store.apply(batch, position)
        for user in users:
            newest = sorted(sent[user], reverse=True)[:20]
            assert [(e.ts, e.request_id) for e in store.page(user, 100)[0]] == newest, (batch_no, user)
            assert len(on_disk(store, user)) < 2 * 20 + 60, (batch_no, user)
    store.close()


def test_in_order_users_are_trimmed_without_a_walk(tmp_path, monkeypatch):
    store = HistoryStore(tmp_path / "h", max_count=10, max_age=1e9)
    store.apply([Decided("r0000", "u", "ip", "read", "allow", "ok", T0)], 1)
    store.close()
    store = HistoryStore(tmp_path / "h", max_count=10, max_age=1e9)  # reopened: its newest entry is looked up
    walks = []
    original = store._trim
    monkeypatch.setattr(store, "_trim", lambda user: (walks.append(user), original(user)))
    for i in range(1, 100, 5):
        store.apply([Decided(f"r{j:04d}", "u", "ip", "read", "allow", "ok", T0 + j) for j in range(i, i + 5)], i + 5)
    assert walks == []
    assert len(on_disk(store, "u")) <= 2 * 10 and [e.request_id for e in store.page("u", 3)[0]] == ["r0100", "r0099", "r0098"]
    store.close()
