"""The hot loop without a broker: one event the policy cannot take must not stop the others."""

import asyncio
from collections import namedtuple

import msgspec

from agents.blocklist_entries import Blocklist
from agents.limiter import Limiter
from agents.rules import LimitBook
from agents.state_codec import STATE_CODEC
from schemas.limits import RateLimit
from schemas.replies import reply_headers
from streams.settings import Settings
from streams.state import MemoryPartitionStore

Record = namedtuple("Record", "key value offset topic partition headers", defaults=((),))


class CollectingBatch:
    def __init__(self, sent: list) -> None:
        self.sent = sent

    def append(self, key, value, timestamp, headers=None):
        self.sent.append((key, value))
        return True


class CollectingSender:
    """Stands in for the Kafka batch sender: records what would be produced, per topic (and per partition)."""

    def __init__(self) -> None:
        self.by_topic: dict[str, list] = {}
        self.partitions: dict[str, list] = {}

    def batch(self, topic, partition):
        return CollectingBatch(self.by_topic.setdefault(topic, []))

    async def add(self, topic, partition, key, value, headers=None):
        self.by_topic.setdefault(topic, []).append((key, value))
        self.partitions.setdefault(topic, []).append(partition)


def event_records(settings, users, stamps=None):
    encode = msgspec.json.encode
    return [
        Record(user.encode(), encode({"request_id": f"r{i}", "user_id": user, "ip": "203.0.113.7",
                                      "request_type": "read", "ts": 1_732_900_000.0 + i}), i, "requests", 0,
               (stamps or {}).get(i, ()))
        for i, user in enumerate(users)
    ]


def test_an_event_the_policy_cannot_decide_is_dead_lettered_and_the_batch_goes_on(tmp_path):
    settings = Settings(var_dir=tmp_path, kafka_bootstrap_servers="unused:9092")
    limits = LimitBook(100, 60.0)
    # Constructed without validation, as a record from an older producer could be: a 5e-324 s window.
    limits.put("broken", RateLimit(user_id="broken", limit=5, window=5e-324))
    limiter = Limiter(settings, limits, Blocklist(), clock=lambda: 1_732_900_100.0)
    sender = CollectingSender()
    limiter.outputs.sender = lambda partition: sender
    limiter.stores[0] = MemoryPartitionStore(0, STATE_CODEC)
    asyncio.run(limiter.process(0, event_records(settings, ["alice", "broken", "bob"])))
    decided = [msgspec.json.decode(v)["request_id"] for _, v in sender.by_topic[settings.decisions_topic]]
    letters = [msgspec.json.decode(v) for _, v in sender.by_topic[settings.dead_letter_topic]]
    assert decided == ["r0", "r2"]
    assert [(x["reason"], x["offset"]) for x in letters] == [("decision_error", 1)]
    assert limiter.positions[0] == 3
    limiter.stores[0].close()


def test_records_of_a_flush_still_completing_are_not_counted_twice(tmp_path):
    """Between a flush's hand-off and its completion the disk position is one flush behind; a consumer
    rewind in that gap must still skip what the handed-off flush already counted."""
    settings = Settings(var_dir=tmp_path, kafka_bootstrap_servers="unused:9092")
    limiter = Limiter(settings, LimitBook(100, 60.0), Blocklist(), clock=lambda: 1_732_900_100.0)
    limiter.stores[0] = MemoryPartitionStore(0, STATE_CODEC)
    records = [Record(b"alice", b"{}", offset, "requests", 0) for offset in range(5)]
    assert limiter._unseen(0, records) == records  # nothing counted yet
    limiter.flusher.handed_off = {0: 3}  # offsets 0-2 counted and handed off, their flush not complete
    assert [r.offset for r in limiter._unseen(0, records)] == [3, 4]
    limiter.positions[0] = 4  # counted since, not flushed: the newer position wins
    assert [r.offset for r in limiter._unseen(0, records)] == [4]
    limiter.stores[0].close()


def replying_limiter(tmp_path):
    """A limiter with 8 reply partitions and partition 0 in memory, producing into a CollectingSender."""
    settings = Settings(var_dir=tmp_path, kafka_bootstrap_servers="unused:9092")
    limiter = Limiter(settings, LimitBook(100, 60.0), Blocklist(), clock=lambda: 1_732_900_100.0)
    limiter.replies.partitions = 8
    sender = CollectingSender()
    limiter.outputs.sender = lambda partition: sender
    limiter.stores[0] = MemoryPartitionStore(0, STATE_CODEC)
    return settings, limiter, sender


def test_a_stamped_request_gets_its_decision_also_on_its_reply_partition(tmp_path):
    settings, limiter, sender = replying_limiter(tmp_path)
    stamps = {1: reply_headers(settings.replies_topic, 5), 2: reply_headers(settings.limits_topic, 0),
              3: reply_headers(settings.replies_topic, 8)}
    asyncio.run(limiter.process(0, event_records(settings, ["a", "b", "c", "d"], stamps)))
    decisions = sender.by_topic[settings.decisions_topic]
    assert [msgspec.json.decode(v)["request_id"] for _, v in decisions] == ["r0", "r1", "r2", "r3"]
    assert sender.by_topic[settings.replies_topic] == [(None, b"[" + decisions[1][1] + b"]")]  # one array per partition
    assert sender.partitions[settings.replies_topic] == [5]
    assert settings.limits_topic not in sender.by_topic
    assert (limiter.replies.routed, limiter.replies.refused) == (1, 2)
    limiter.stores[0].close()


def test_events_older_than_the_kept_counters_are_decided_counted_and_logged(tmp_path, caplog):
    """Old traffic replayed into a partition live traffic has moved on: its counters expired; not silent."""
    from streams import metrics

    settings = Settings(var_dir=tmp_path, kafka_bootstrap_servers="unused:9092")
    limiter = Limiter(settings, LimitBook(2, 60.0), Blocklist(), clock=lambda: 1_732_900_100.0)
    sender = CollectingSender()
    limiter.outputs.sender = lambda partition: sender
    store = limiter.stores[0] = MemoryPartitionStore(0, STATE_CODEC)
    store.watermark = 1_732_900_000.0 + 3_600  # live traffic an hour ahead, and an expiry since
    store.expire()
    before = metrics.LATE_EVENTS._value.get()
    asyncio.run(limiter.process(0, event_records(settings, ["alice"] * 3)))  # ts 1_732_900_000 + 0, 1, 2
    verdicts = [msgspec.json.decode(v)["verdict"] for _, v in sender.by_topic[settings.decisions_topic]]
    assert verdicts == ["allow", "allow", "throttle"]  # decided, counted from then on
    assert metrics.LATE_EVENTS._value.get() - before == 3
    assert "3 late events" in caplog.text
    fresh = Limiter(settings, LimitBook(2, 60.0), Blocklist(), clock=lambda: 1_732_900_100.0)
    fresh.outputs.sender = lambda partition: CollectingSender()
    fresh.stores[0] = MemoryPartitionStore(0, STATE_CODEC)
    caplog.clear()
    asyncio.run(fresh.process(0, event_records(settings, ["bob"] * 3)))  # no expiry yet: nothing late
    assert "late events" not in caplog.text
    store.close()


def test_the_replies_of_one_batch_leave_as_one_array_per_reply_partition_in_decision_order(tmp_path):
    settings, limiter, sender = replying_limiter(tmp_path)
    to = {5: reply_headers(settings.replies_topic, 5), 2: reply_headers(settings.replies_topic, 2)}
    stamps = {0: to[5], 1: to[2], 2: to[5], 4: to[5]}
    asyncio.run(limiter.process(0, event_records(settings, ["a", "b", "c", "d", "e"], stamps)))
    replies = sender.by_topic[settings.replies_topic]
    assert sender.partitions[settings.replies_topic] == [5, 2]
    assert [[d["request_id"] for d in msgspec.json.decode(v)] for _, v in replies] == [["r0", "r2", "r4"], ["r1"]]
    assert all(key is None for key, _ in replies)
    limiter.stores[0].close()


def test_a_request_refused_by_its_address_is_throttled_and_counted_against_no_user_rule(tmp_path):
    from schemas.refusals import AddressRefusal, refusal_header

    settings, limiter, sender = replying_limiter(tmp_path)
    refusal = AddressRefusal("remote_address", 3, 60.0, 4, 20.0)
    stamps = {1: [refusal_header(refusal)], 2: [("ratewarden-address-limit", b'{"rule": 1}')]}
    asyncio.run(limiter.process(0, event_records(settings, ["a", "a", "a", "a"], stamps)))
    values = [v for _, v in sender.by_topic[settings.decisions_topic]]
    decided = {d["request_id"]: d for d in map(msgspec.json.decode, values)}
    refused = decided["r1"]
    assert (refused["verdict"], refused["reason"], refused["limit"], refused["count"], refused["remaining"]) == (
        "throttle", "rate_limited_address", 3, 4, 0)
    assert refused["retry_after"] == 20.0 and refused["reset_at"] - refused["window_start"] == 60.0
    # the user's counter saw r0 and r3 only: the refused request and the bad header's are not counted
    assert (decided["r0"]["count"], decided["r3"]["count"]) == (1, 2)
    letters = [msgspec.json.decode(v) for _, v in sender.by_topic[settings.dead_letter_topic]]
    assert [(x["reason"], x["offset"]) for x in letters] == [("decision_error", 2)]
    assert "ratewarden-address-limit" in letters[0]["detail"]
    limiter.stores[0].close()
