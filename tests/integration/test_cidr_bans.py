"""Network (CIDR) bans on the real broker: published to the compacted blocklist topic while a worker
runs, enforced by the limiter from the next event on, by event time, and lifted by a tombstone."""

import ipaddress
import random
import time

import pytest

from agents.network_bans import normalize_cidr
from ratewarden.control import block, unblock
from schemas.events import RequestEvent
from schemas.limits import BlocklistEntry

pytestmark = pytest.mark.kafka

T0 = 1_732_899_960.0
V6 = "2001:db8:1:2::/64"
V4 = "198.51.100.0/24"
rng = random.Random(11)


def inside(cidr: str, n: int) -> list[str]:
    """``n`` distinct random addresses of ``cidr``, its first and last among them."""
    network = ipaddress.ip_network(cidr)
    picks = {0, network.num_addresses - 1} | {rng.randrange(network.num_addresses) for _ in range(n)}
    return [str(network[i]) for i in sorted(picks)]


def network_ban(cidr: str, **fields) -> BlocklistEntry:
    """An entry as ``ratewarden blocklist add CIDR`` writes it (normalised subject)."""
    return BlocklistEntry(subject=normalize_cidr(cidr), kind="network", reason="test", **fields)


def decide(pipeline, ips: list[str], ts: float, tag: str, user: str | None = None) -> list[tuple[str, str]]:
    """(verdict, reason) of one event per address (each from its own user unless ``user`` is given)."""
    events = [RequestEvent(f"{tag}-{i}", user or f"{tag}-user-{i}", ip, "read", ts + i * 0.001)
              for i, ip in enumerate(ips)]
    by_id = {d.request_id: d for d in pipeline.replay(events)}
    return [(by_id[e.request_id].verdict, by_id[e.request_id].reason) for e in events]


def wait_until_reason(pipeline, ip: str, ts: float, reason: str, timeout: float = 30.0) -> None:
    """Probe ``ip`` until its decision has ``reason`` (the worker follows the topic within its fetch wait)."""
    deadline, n = time.monotonic() + timeout, 0
    while decide(pipeline, [ip], ts, f"probe-{ip}-{n}")[0][1] != reason:
        assert time.monotonic() < deadline, f"{ip} never got {reason}"
        n += 1
        time.sleep(0.1)


def test_network_bans_block_every_address_inside_from_the_next_event_on_until_their_tombstone(make_core_pipeline):
    pipeline = make_core_pipeline(default_limit=3)
    # Loaded before the worker starts: a /48 banned for 60 s of event time only, from T0 + 1000.
    block(network_ban("2001:db8:77::/48", start=T0 + 1000, ttl=60.0), pipeline.settings)
    pipeline.start_worker()
    v6, v4 = inside(V6, 8), inside(V4, 8)
    outside = ["2001:db8:1:3::1", "2001:db8:1:1:ffff:ffff:ffff:ffff", "198.51.101.0", "198.51.99.255", "10.0.0.1"]
    assert {v for v, _ in decide(pipeline, v6 + v4, T0, "before")} == {"allow"}

    block(network_ban(V6), pipeline.settings)
    block(network_ban("198.51.100.77/24"), pipeline.settings)  # host bits: stored as 198.51.100.0/24
    wait_until_reason(pipeline, v6[0], T0 + 10, "network_blocked")
    wait_until_reason(pipeline, v4[0], T0 + 10, "network_blocked")

    # Every address inside is blocked; those outside are decided as before (limit 3: the 4th is throttled).
    assert decide(pipeline, v6 + v4, T0 + 20, "in") == [("block", "network_blocked")] * (len(v6) + len(v4))
    assert decide(pipeline, outside, T0 + 20, "out") == [("allow", "within_limit")] * len(outside)
    assert [v for v, _ in decide(pipeline, ["198.51.101.1"] * 4, T0 + 20, "heavy", user="heavy")] == [
        "allow", "allow", "allow", "throttle"]
    assert [v for v, _ in decide(pipeline, [v4[1]] * 5, T0 + 21, "banned-heavy", user="banned-heavy")] == [
        "block"] * 5  # blocked requests are not counted

    # The timed ban: only in [start, start + ttl) of event time.
    timed = inside("2001:db8:77::/48", 2)[1]
    assert [decide(pipeline, [timed], T0 + 1000 + dt, f"timed-{dt}")[0] for dt in (-1, 0, 59.9, 60)] == [
        ("allow", "within_limit"), ("block", "network_blocked"), ("block", "network_blocked"), ("allow", "within_limit")]

    # A tombstone lifts the /24; the /64 stays.
    unblock("network", normalize_cidr(V4), pipeline.settings)
    wait_until_reason(pipeline, v4[0], T0 + 30, "within_limit")
    assert decide(pipeline, v4, T0 + 40, "after") == [("allow", "within_limit")] * len(v4)
    assert decide(pipeline, v6, T0 + 40, "still") == [("block", "network_blocked")] * len(v6)
