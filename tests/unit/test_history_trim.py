"""Per-user trims of the request history: decided while writing when a user's runs come in order (or
nearly), by a walk otherwise; either way reads see exactly the newest ``max_count`` and disk stays
bounded."""

import random

import msgspec
import pytest

from streams.history import Decided, HistoryStore

T0 = 1_732_900_000.0


def on_disk(store: HistoryStore, user: str) -> list[tuple[float, str]]:
    """The user's ``(ts, request_id)`` entries on disk, counted inside its runs (a repeat counts twice)."""
    prefix = user.encode() + b"\x00"
    it, entries = store._db.iter(), []
    it.seek(prefix)
    while it.valid() and it.key().startswith(prefix):
        entries += [(e[0], e[1]) for e in msgspec.msgpack.decode(it.value())]
        it.next()
    return entries


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


@pytest.mark.parametrize("order", ["in order", "shuffled in each apply", "late"])
def test_a_trim_cuts_a_user_to_the_bounds(tmp_path, monkeypatch, order):
    """A user is trimmed once max_count entries were added since its last trim: while writing, if its runs
    since hold max_count entries newer than all before (the runs up to its newest entry at the last trim
    are deleted), else, once a quarter more were added, by a walk, which leaves exactly the newest
    max_count. Either way a user holds at most two trim cycles of entries (each under max_count and a
    quarter, plus one apply's), and a sweep leaves exactly the bounds."""
    rng = random.Random(3)
    store = HistoryStore(tmp_path / "h", max_count=10, max_age=1e9)
    store.apply([Decided("r0000", "u", "ip", "read", "allow", "ok", T0)], 1)
    store.close()
    store = HistoryStore(tmp_path / "h", max_count=10, max_age=1e9)  # reopened: its newest entry is looked up
    walks = []
    original = store._cut
    monkeypatch.setattr(store, "_cut", lambda *args, **kw: walks.append(args[2]) or original(*args, **kw))
    sent, position = [(T0, "r0000")], 1
    for i in range(1, 400, 4):
        times = [T0 + j - (rng.uniform(0, 30) if order == "late" and rng.random() < 0.3 else 0.0) for j in range(i, i + 4)]
        if order == "shuffled in each apply":
            rng.shuffle(times)
        batch = [Decided(f"r{i + k:04d}", "u", "ip", "read", "allow", "ok", ts) for k, ts in enumerate(times)]
        sent += [(d.ts_event, d.request_id) for d in batch]
        position += len(batch)
        walked = len(walks)
        store.apply(batch, position)
        newest = sorted(sent, reverse=True)[:10]
        entries = on_disk(store, "u")
        assert [(e.ts, e.request_id) for e in store.page("u", 100)[0]] == newest
        assert set(newest) <= set(entries) and len(entries) < 2 * (10 + 10 // 4 + 4)
        if len(walks) > walked:
            assert sorted(entries, reverse=True) == newest  # a walk leaves exactly the bounds
    assert (walks == []) == (order != "late") and (order == "in order") == (sent == sorted(sent)), walks
    store.sweep()
    assert sorted(on_disk(store, "u"), reverse=True) == sorted(sent, reverse=True)[:10]
    store.close()
