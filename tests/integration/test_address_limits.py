"""Per-address limits of ``POST /requests`` on the real broker: ``remote_address`` rules of the ``ratewarden``
domain, counted by address on the descriptor counters, exact with two workers and two gateways; a
refused request is throttled by the limiter and kept in ``decisions`` like every other."""

import asyncio
from collections import Counter

import pytest

from ratewarden.client import read_topic_records
from ratewarden.gateway.runtime import Gateway
from ratewarden.gateway.testing import GatewayStack, wait_until

pytestmark = pytest.mark.kafka

# GCRA with burst = limit - 1: a rested address takes exactly `limit` at once, then one every
# day / limit, and no wall-clock window edge (this test runs on the gateway's clock) can reset a count.
RULES = """\
domain: ratewarden
descriptors:
  - key: remote_address             # every address, each counted apart
    rate_limit: {unit: day, requests_per_unit: 20, algorithm: gcra, burst: 19}
  - key: remote_address
    value: 198.51.100.9
    rate_limit: {unit: day, requests_per_unit: 3, algorithm: gcra, burst: 2}
"""
IPS = [f"203.0.113.{i}" for i in range(6)]


async def _through_second_gateway(settings, ips: list[str], rounds: int) -> list[str]:
    """Requests through another gateway runtime: its own reply partition, the same address counters."""
    gateway = Gateway(settings.model_copy(update={"gateway_reply_partition": 11}))
    await gateway.start()
    try:
        assert gateway.limits.rules.addresses, "the second gateway read the rules at start"
        outcomes = await gateway.decide_many([(f"u{n}-{ip}", ip, "read") for n in range(rounds) for ip in ips])
        return [o.decision.reason for o in outcomes]
    finally:
        await gateway.stop()


def test_an_address_limit_holds_exactly_across_users_workers_and_gateways(kafka_bootstrap, tmp_path):
    with GatewayStack(kafka_bootstrap, tmp_path, workers=2) as stack:
        stack.load_rules(RULES)
        with stack.client("service") as service:
            # one address, five users: the address's own limit of 3, whoever asks
            answers = [service.post("/requests", json={"user_id": f"user-{i}", "ip": "198.51.100.9",
                                                       "request_type": "read"}) for i in range(5)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
            refused = answers[3]
            assert refused.json()["reason"] == "rate_limited_address" and int(refused.headers["retry-after"]) >= 1
            assert '"address";q=3;w=86400' in refused.headers["ratelimit-policy"]
            assert refused.headers["ratelimit"].startswith('"address";r=0;t=')
            # the batch endpoint counts each item the same way, in order
            batch = service.post("/requests/batch", json={"requests": [
                {"user_id": "user-9", "ip": "198.51.100.9", "request_type": "read"},
                {"user_id": "user-9", "ip": "192.0.2.1", "request_type": "read"}]}).json()["decisions"]
            assert [(d["code"], d.get("reason")) for d in batch] == [(429, "rate_limited_address"), (200, None)]

            # twelve addresses, 30 requests each, through both gateways at once: exactly 20 pass per address
            second = asyncio.run(_through_second_gateway(stack.settings, IPS, 15))
            first = [service.post("/requests", json={"user_id": f"v{n}-{ip}", "ip": ip, "request_type": "read"}
                                  ).json().get("reason") for n in range(15) for ip in IPS]
        passed = Counter(ip for ip, reason in zip(IPS * 15, second) if reason == "within_limit")
        passed.update(ip for ip, reason in zip(IPS * 15, first) if reason is None)
        assert passed == {ip: 20 for ip in IPS}
        assert all(p.poll() is None for p in stack.workers.values())

        # every refused request has its decision on the decisions topic, throttled by its address
        refused_ids = {refused.json()["request_id"], answers[4].json()["request_id"]}
        wanted = refused_ids | {batch[0]["request_id"]}
        found = {}

        def decided() -> bool:
            for record in read_topic_records(stack.settings, stack.settings.decisions_topic):
                value = record.value
                if value and any(i.encode() in value for i in wanted):
                    found[record.key] = value
            return len(found) == len(wanted)

        wait_until(decided, what="the refused requests' decisions")
        assert all(b'"reason":"rate_limited_address"' in v and b'"verdict":"throttle"' in v for v in found.values())
