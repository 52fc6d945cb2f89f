"""The blocklist agent on the real broker: flags on `ip-flags` -> bans the limiter enforces by event time."""

import time

import msgspec
import pytest

from agents.ban_horizon import is_horizon_key
from ratewarden.control import block
from schemas.events import RequestEvent
from schemas.flags import AutoBan, IpFeatures, IpFlag, Population
from schemas.limits import BlocklistEntry
from streams.kafka_config import kafka_python_options
from streams.settings import Settings

pytestmark = pytest.mark.kafka

T0 = 1_732_899_960.0


def flag(ip: str, end: float, allowlisted: bool = False) -> IpFlag:
    features = IpFeatures(700, 11.7, 1, 700.0, 0.0, "read", 1.0, 600, 0, 0.857, end - 59, end - 1)
    return IpFlag(ip, end - 60, end, 99.0, ["flood"], allowlisted, features, {"z_requests": 99.0},
                  Population(100, 5.0, 2.0, 5.0, 2.0))


def publish_flags(settings: Settings, flags: list[IpFlag]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                             **kafka_python_options(settings))
    for f in flags:
        producer.send(settings.ip_flags_topic, key=f.ip.encode(), value=msgspec.json.encode(f))
    producer.flush()
    producer.close()


def bans(pipeline) -> list[AutoBan]:
    decode = msgspec.json.Decoder(AutoBan).decode
    return [decode(r.value) for r in pipeline.read_topic(pipeline.settings.blocklist_topic)
            if r.value is not None and not is_horizon_key(r.key.decode())]


def wait_for_bans(pipeline, n: int, timeout: float = 60.0) -> list[AutoBan]:
    deadline = time.monotonic() + timeout
    while len(found := bans(pipeline)) < n:
        assert time.monotonic() < deadline, f"{len(found)} of {n} bans after {timeout:g} s: {found}"
        time.sleep(0.3)
    return found


def probe(pipeline, ip: str, *times: float) -> list[tuple[str, str]]:
    events = [RequestEvent(f"p-{ip}-{ts}", f"probe-{i}", ip, "read", ts) for i, ts in enumerate(times)]
    return [(d.verdict, d.reason) for d in pipeline.replay(events)]


def test_flags_become_bans_with_event_time_ttls_longer_for_repeat_offenders(make_pipeline):
    pipeline = make_pipeline(default_limit=100, ban_ttl=300.0, ban_ttl_factor=4.0, allowlist_cidrs="192.0.2.0/24")
    block(BlocklistEntry(subject="198.51.100.99", reason="manual"), pipeline.settings)  # forever, by hand
    pipeline.start_worker()
    ip, first_end = "203.0.113.9", T0 + 60
    publish_flags(pipeline.settings, [
        flag(ip, first_end),
        flag(ip, first_end + 60),  # the next window of the same attack: same offence, no new entry
        flag("192.0.2.10", first_end, allowlisted=True),  # an allow-listed office: reported, not banned
        flag("198.51.100.99", first_end),  # already banned by hand: left alone
    ])
    [manual, first] = wait_for_bans(pipeline, 2)
    assert manual.reason == "manual"
    assert (first.subject, first.start, first.ttl, first.offences) == (ip, first_end, 300.0, 1)

    # The limiter enforces it from the next event on, by event time, and lets the IP through after the TTL.
    assert probe(pipeline, ip, first_end - 1, first_end, first_end + 299, first_end + 301) == [
        ("allow", "within_limit"), ("block", "ip_blocked"), ("block", "ip_blocked"), ("allow", "within_limit"),
    ]

    second_end = first_end + 1_000  # flagged again after the first ban expired: a longer ban
    publish_flags(pipeline.settings, [flag(ip, second_end)])
    second = wait_for_bans(pipeline, 3)[-1]
    assert (second.start, second.ttl, second.offences) == (second_end, 1_200.0, 2) and second.ttl > first.ttl
    assert probe(pipeline, ip, second_end + 301, second_end + 1_199, second_end + 1_201) == [
        ("block", "ip_blocked"), ("block", "ip_blocked"), ("allow", "within_limit"),
    ]
    assert probe(pipeline, "198.51.100.99", second_end)[0] == ("block", "ip_blocked")
    time.sleep(2)  # no late entry for the office or the manual ban
    assert [b.subject for b in bans(pipeline)] == ["198.51.100.99", ip, ip]
