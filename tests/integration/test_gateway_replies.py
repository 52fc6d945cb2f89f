"""Routed replies against the real broker: the gateway reads only its reply partition, stream traffic gets none."""

import asyncio
import time
import uuid
from collections import Counter

import msgspec
import pytest

from ratewarden.client import RequestPublisher, read_topic_records
from ratewarden.gateway.runtime import Gateway
from ratewarden.gateway.testing import GatewayStack, wait_until
from schemas.events import RequestEvent
from schemas.replies import reply_headers

pytestmark = pytest.mark.kafka


def request_ids(records) -> Counter:
    """Request ids of decision records (one decision each) or reply records (an array of decisions each)."""
    ids: Counter = Counter()
    for record in records:
        value = msgspec.json.decode(record.value)
        ids.update(d["request_id"] for d in (value if isinstance(value, list) else [value]))
    return ids


async def decide_through_runtime(settings, requests):
    """A second gateway runtime in this event loop (the stack's own one serves HTTP in its thread)."""
    gateway = Gateway(settings)
    await gateway.start()
    try:
        outcomes = await gateway.decide_many(requests)
        return outcomes, gateway.waiter.partition, gateway.waiter.consumer.assignment()
    finally:
        await gateway.stop()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_only_stamped_requests_get_one_committed_reply_on_their_gateways_partition(kafka_bootstrap, tmp_path, guarantee):
    with GatewayStack(kafka_bootstrap, tmp_path, processing_guarantee=guarantee) as stack:
        settings = stack.settings.model_copy(update={"gateway_reply_partition": 3})
        stream = [RequestEvent(uuid.uuid4().hex, f"stream-{i % 50}", "198.51.100.7", "read", time.time())
                  for i in range(3_000)]
        with RequestPublisher(stack.settings) as publisher:  # other users' traffic, no reply stamp
            publisher.publish_many(stream)
        requests = [(f"gw-{i % 40}", "192.0.2.5", "read") for i in range(600)]
        outcomes, partition, assignment = asyncio.run(decide_through_runtime(settings, requests))

        assert partition == 3 and {(tp.topic, tp.partition) for tp in assignment} == {(settings.replies_topic, 3)}
        assert [o.event.user_id for o in outcomes] == [r[0] for r in requests], "outcomes in request order"
        assert all(o.decision is not None and o.decision.request_id == o.event.request_id for o in outcomes)
        assert Counter(o.decision.verdict for o in outcomes) == {"allow": 600}
        stream_ids, gateway_ids = {e.request_id for e in stream}, {o.event.request_id for o in outcomes}

        everything = stream_ids | gateway_ids
        decided = wait_until(lambda: (ids := request_ids(read_topic_records(stack.settings, stack.settings.decisions_topic,
                                                                          isolation_level="read_committed")))
                           and everything <= set(ids) and ids, what="every decision committed")
        replies = read_topic_records(stack.settings, stack.settings.replies_topic, isolation_level="read_committed")
        replied = request_ids(replies)
        assert not stream_ids & set(replied), "stream traffic (no stamp) gets no reply"
        assert gateway_ids <= set(request_ids(r for r in replies if r.partition == 3))
        assert len(replies) < len(gateway_ids), "a reply record carries the decisions of a batch"
        if guarantee == "exactly_once":
            assert max(replied.values()) == 1 and max(decided.values()) == 1, "a committed decision or reply twice"


def test_a_foreign_reply_stamp_is_decided_but_gets_no_reply_and_is_logged(kafka_bootstrap, tmp_path):
    with GatewayStack(kafka_bootstrap, tmp_path) as stack:
        s = stack.settings
        limits_before = len(read_topic_records(s, s.limits_topic))
        stamps = {
            "control": reply_headers(s.limits_topic, 0),  # a stamp that would write into a control topic
            "range": reply_headers(s.replies_topic, s.replies_partitions),
            "half": reply_headers(s.replies_topic, 0)[:1],
        }
        events = {name: RequestEvent(uuid.uuid4().hex, f"odd-{name}", "192.0.2.6", "read", time.time()) for name in stamps}
        with RequestPublisher(s) as publisher:
            for name, event in events.items():
                publisher.publish_raw(event.user_id.encode(), msgspec.json.encode(event), stamps[name])
        ids = {e.request_id for e in events.values()}
        wait_until(lambda: ids <= set(request_ids(read_topic_records(s, s.decisions_topic))), what="the decisions")
        assert not ids & set(request_ids(read_topic_records(s, s.replies_topic)))
        assert len(read_topic_records(s, s.limits_topic)) == limits_before
        log = stack.tmp / "w1.log"
        wait_until(lambda: "no reply for a request" in log.read_text(), what="the refusal in the worker's log")
        assert stack.workers["w1"].poll() is None, "the worker keeps running"
