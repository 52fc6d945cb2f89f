"""The request history as runs (one RocksDB value per user and apply): reads equal a plain in-memory
history of every decision, whatever the order of event times, repeats across batches, trims, sweeps
and reopenings; a repeated decision is read once; an apply writes one value per user; a copy in the
former layout (one key per decision) is rebuilt from the topic."""

import logging
import random
import struct

import msgspec
import pytest
from rocksdict import Rdict

from streams.history import Decided, HistoryStore, history_options

T0 = 1_732_900_000.0


class Oracle:
    """Every decision applied, kept in memory; bounds and paging as the history documents them."""

    def __init__(self, max_count: int, max_age: float) -> None:
        self.max_count, self.max_age = max_count, max_age
        self.entries: dict[str, dict[tuple[float, str], tuple]] = {}
        self.watermark = 0.0

    def apply(self, decisions: list[Decided]) -> None:
        for d in decisions:
            entry = (d.ts_event, d.request_id, d.request_type, d.ip, d.verdict, d.reason)
            self.entries.setdefault(d.user_id, {})[(d.ts_event, d.request_id)] = entry
            self.watermark = max(self.watermark, d.ts_event)

    def page(self, user: str, limit: int, before: float | None) -> tuple[list[tuple], float | None]:
        horizon = self.watermark - self.max_age
        kept = sorted((e for e in self.entries.get(user, {}).values() if e[0] >= horizon), reverse=True)
        rest = [e for e in kept[: self.max_count] if before is None or e[0] < before]
        if len(rest) <= limit:
            return rest, None
        tied = [i for i, e in enumerate(rest) if e[0] == rest[limit - 1][0]]  # the times of the last row
        if tied[-1] < limit:
            rows = rest[:limit]
        else:  # the page ends inside a group of equal times: before it, or all of it when it is first
            rows = rest[: tied[0]] if tied[0] else rest[: tied[-1] + 1]
        return rows, (rows[-1][0] if len(rows) < len(rest) else None)


def read(store: HistoryStore, user: str, limit: int, before: float | None) -> tuple[list[tuple], float | None]:
    entries, next_before = store.page(user, limit, before)
    return [(e.ts, e.request_id, e.request_type, e.ip, e.verdict, e.reason) for e in entries], next_before


@pytest.mark.parametrize("seed", range(16))
def test_reads_equal_an_in_memory_history(tmp_path, seed):
    rng = random.Random(seed)
    max_count, max_age = rng.choice([3, 8, 20]), rng.choice([40.0, 200.0, 1e9])
    late, again, most = rng.choice([0.0, 0.03, 0.2]), rng.choice([0.0, 0.1]), rng.choice([5, 80])
    store = HistoryStore(tmp_path / "h", max_count=max_count, max_age=max_age)
    oracle = Oracle(max_count, max_age)
    users = [f"user-{i}" for i in range(rng.randint(1, 5))]
    sent: list[Decided] = []
    clock, position = T0, 0
    for batch_no in range(60):
        batch = []
        for _ in range(rng.randint(1, most)):
            if sent and rng.random() < again:  # delivered again (at least once), maybe in the same batch
                batch.append(rng.choice(sent[-300:]))
                continue
            clock += rng.choice([0.0, 0.5, 0.5, 1.0])  # equal times are common
            ts = clock - (rng.choice([0.5, 3.0, 30.0, 100.0]) * rng.randint(1, 4) if rng.random() < late else 0.0)
            verdict = rng.choice(["allow", "throttle"])
            decision = Decided(f"r{len(sent):05d}", rng.choice(users), f"10.0.0.{rng.randint(1, 9)}", "read",
                               verdict, "within_limit" if verdict == "allow" else "limit_reached", max(ts, 0.0))
            sent.append(decision)
            batch.append(decision)
        position += len(batch)
        store.apply(batch, position)
        oracle.apply(batch)
        if rng.random() < 0.1:
            store.sweep()
        if rng.random() < 0.05:
            store.close()
            store = HistoryStore(tmp_path / "h", max_count=max_count, max_age=max_age)
            assert store.position == position
        for user in users:
            limit = rng.randint(1, max_count + 2)
            before = rng.choice([None, clock - rng.uniform(0, 50)])
            assert read(store, user, limit, before) == oracle.page(user, limit, before), (batch_no, user, limit, before)
            pages, before, expected = [], None, []  # the whole history, page by page
            while True:
                rows, next_before = read(store, user, limit, before)
                want = oracle.page(user, limit, before)
                pages.append((rows, next_before))
                expected.append(want)
                if next_before is None or (rows, next_before) != want:
                    break
                before = next_before
            assert pages == expected, (batch_no, user, limit)
    store.sweep()
    for user in users:
        assert read(store, user, max_count, None) == oracle.page(user, max_count, None)
    store.close()


def test_a_late_run_does_not_count_toward_a_trim_decided_while_writing(tmp_path):
    store = HistoryStore(tmp_path / "h", max_count=3, max_age=1e9)
    times = {"a": 10, "b": 11, "c": 12, "late": 5, "e": 20, "f": 21}
    d = {rid: Decided(rid, "u", "ip", "read", "allow", "ok", T0 + ts) for rid, ts in times.items()}
    store.apply([d["a"], d["b"], d["c"]], 3)
    store.apply([d["late"]], 4)  # below the newest: not known to be distinct from the entries before
    store.apply([d["e"]], 5)
    store.apply([d["f"]], 6)  # three entries since the last trim, two of them newer than all before
    assert [e.request_id for e in store.page("u", 10)[0]] == ["f", "e", "c"]
    store.apply([d["c"]], 7)  # again: merged into its run
    store.apply([Decided("g", "u", "ip", "read", "allow", "ok", T0 + 22)], 8)
    assert [e.request_id for e in store.page("u", 10)[0]] == ["g", "f", "e"]
    store.close()


def runs_on_disk(store: HistoryStore) -> dict[bytes, list[str]]:
    """Every run key (not meta keys) and the request ids in it."""
    return {key: [e[1] for e in msgspec.msgpack.decode(value)] for key, value in store._db.items()
            if not key.startswith(b"\x00")}


def test_a_decision_in_two_runs_is_read_once(tmp_path):
    store = HistoryStore(tmp_path / "h", max_count=10, max_age=1e9)
    d1, d2, d3, d4 = (Decided(f"r{i}", "u", "ip", "read", "allow", "ok", T0 + ts) for i, ts in enumerate([10, 20, 15, 5], 1))
    store.apply([d1, d2], 2)
    store.apply([d1, d3], 4)  # d1 again, in a run keyed by d3
    assert sorted(runs_on_disk(store).values()) == [["r1", "r2"], ["r1", "r3"]]
    assert [e.request_id for e in store.page("u", 10)[0]] == ["r2", "r3", "r1"]
    store.apply([d4, d2], 6)  # d2 again: its run has d2's key, so it is merged into the existing one
    assert sorted(runs_on_disk(store).values()) == [["r1", "r3"], ["r4", "r1", "r2"]]
    assert [e.request_id for e in store.page("u", 10)[0]] == ["r2", "r3", "r1", "r4"]
    assert [e.request_id for e in store.page("u", 2)[0]] == ["r2", "r3"]
    store.sweep()
    assert [e.request_id for e in store.page("u", 10)[0]] == ["r2", "r3", "r1", "r4"]
    store.close()


def test_one_apply_writes_one_value_per_user(tmp_path):
    store = HistoryStore(tmp_path / "h", max_count=1000, max_age=1e9)
    rng = random.Random(1)
    batch = [Decided(f"r{i:04d}", "u", "ip", "read", "allow", "ok", T0 + rng.uniform(0, 60)) for i in range(500)]
    assert store.apply(batch, 500) == 500
    assert len(list(store._db.keys())) == 1 + 3  # the run, and the position, watermark and format keys
    (key, value), = ((k, v) for k, v in store._db.items() if k.startswith(b"u\x00"))
    ordered = sorted((d.ts_event, d.request_id) for d in batch)
    assert key == b"u\x00" + struct.pack(">d", ordered[-1][0]) + ordered[-1][1].encode()  # its newest entry
    assert [(e[0], e[1]) for e in msgspec.msgpack.decode(value)] == ordered
    store.apply([Decided(f"s{i}", f"v{i % 3}", "ip", "read", "allow", "ok", T0 + i) for i in range(30)], 530)
    assert len(runs_on_disk(store)) == 1 + 3  # u's run and one for each of v0, v1, v2
    store.close()


def test_a_copy_in_the_former_layout_is_rebuilt_from_the_topic(tmp_path, caplog):
    db = Rdict(str(tmp_path / "h"), options=history_options())  # one key per decision, no format key
    for i in range(5):
        key = b"u\x00" + struct.pack(">d", T0 + i) + f"r{i}".encode()
        db[key] = msgspec.msgpack.encode(("read", "ip", "allow", "ok"))
    db[b"\x00position"] = struct.pack("<q", 5)
    db[b"\x00watermark"] = struct.pack("<d", T0 + 4)
    db.close()
    with caplog.at_level(logging.INFO, logger="streams.history"):
        store = HistoryStore(tmp_path / "h", max_count=10, max_age=1e9)
    assert "old layout" in caplog.text
    assert store.position is None and store.watermark == 0.0 and store.page("u", 10) == ([], None)
    store.apply([Decided("r9", "u", "ip", "read", "allow", "ok", T0 + 9)], 6)
    store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streams.history"):
        store = HistoryStore(tmp_path / "h", max_count=10, max_age=1e9)  # the new layout is kept
    assert "old layout" not in caplog.text
    assert store.position == 6 and [e.request_id for e in store.page("u", 10)[0]] == ["r9"]
    store.close()
