"""The rls role's loop without a broker: answers, routed replies with their kind, bad hits dead-lettered."""

import asyncio

import msgspec

from agents.descriptor_counter import DescriptorCounter
from agents.state_codec import STATE_CODEC
from schemas.descriptors import DescriptorHit
from schemas.replies import RLS_REPLY, reply_headers
from streams.settings import Settings
from streams.state import MemoryPartitionStore
from test_limiter_loop import Record

TS = 1_733_001_600.0


class HeaderSender:
    """Records (topic, partition, key, value, headers) of every record the loop would produce."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    async def add(self, topic, partition, key, value, headers=None):
        self.sent.append((topic, partition, key, value, headers))

    def on(self, topic: str) -> list[tuple]:
        return [s for s in self.sent if s[0] == topic]


def hit_record(offset: int, counter: str = "c1", limit: int = 2, headers=(), value: bytes | None = None) -> Record:
    hit = DescriptorHit(f"call{offset}/0", "edge", counter, "remote_address", limit, 3600.0, ts=TS + offset)
    return Record(counter.encode(), value if value is not None else msgspec.json.encode(hit), offset, "rls-hits", 0,
                  headers)


def test_every_hit_counts_answers_go_to_the_audit_topic_and_stamped_ones_to_their_reply_partition(tmp_path):
    settings = Settings(var_dir=tmp_path, kafka_bootstrap_servers="unused:9092")
    counter = DescriptorCounter(settings, clock=lambda: TS + 10)
    counter.replies.partitions = 8
    sender = HeaderSender()
    counter.outputs.sender = lambda partition: sender
    counter.stores[0] = MemoryPartitionStore(0, STATE_CODEC)
    stamp = tuple(reply_headers(settings.replies_topic, 5))
    records = [hit_record(0, headers=stamp), hit_record(1), hit_record(2, headers=stamp),
               hit_record(3, value=b'{"request_id": "x"}'), hit_record(4, counter="c2", value=b"\xff junk"),
               hit_record(5, counter="c3")]
    asyncio.run(counter.process(0, records))

    answers = [msgspec.json.decode(s[3]) for s in sender.on(settings.rls_decisions_topic)]
    assert [(a["request_id"], a["code"], a["remaining"]) for a in answers] == [
        ("call0/0", "OK", 1), ("call1/0", "OK", 0), ("call2/0", "OVER_LIMIT", 0), ("call5/0", "OK", 1)]
    replies = sender.on(settings.replies_topic)
    assert [(s[1], s[2], [a["request_id"] for a in msgspec.json.decode(s[3])], s[4]) for s in replies] == [
        (5, None, ["call0/0", "call2/0"], RLS_REPLY)]  # one record: the batch's answers for partition 5, in order
    dead = [msgspec.json.decode(s[3]) for s in sender.on(settings.dead_letter_topic)]
    assert [d["reason"] for d in dead] == ["invalid_hit", "invalid_hit"] and counter.stats["dead_letters"] == 2
    assert counter.positions[0] == 6 and counter.stores[0].get("c1").count == 3
    counter.stores[0].close()
