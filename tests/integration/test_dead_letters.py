"""Malformed events land in the dead-letter topic with their bytes and a reason; the worker goes on."""

import json
import time

import msgspec
import pytest

from ratewarden.client import RequestPublisher
from schemas.events import DeadLetter, RequestEvent

pytestmark = pytest.mark.kafka

GOOD = {"request_id": "ok", "user_id": "u1", "ip": "203.0.113.7", "request_type": "read", "ts": 1_732_900_000.0}


def with_(**changes) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def malformed(now: float) -> list[tuple[bytes | None, str]]:
    """(payload, expected reason): well over 20 kinds."""
    return [
        (b"", "empty"),
        (None, "empty"),
        (b"not json", "not_json"),
        (b'{"request_id": "x", ', "not_json"),
        (b"[1, 2, 3]", "not_json"),
        (b'"a string"', "not_json"),
        (b"42", "not_json"),
        (b"\xff\xfe\x00garbage", "not_json"),
        (b'{"ts": NaN}', "not_json"),
        (with_(request_id=...), "invalid_field"),
        (with_(user_id=...), "invalid_field"),
        (with_(ip=...), "invalid_field"),
        (with_(request_type=...), "invalid_field"),
        (with_(ts=...), "invalid_field"),
        (with_(ts="yesterday"), "invalid_field"),
        (with_(ts=True), "invalid_field"),
        (with_(ts=-5), "invalid_field"),
        (with_(user_id=17), "invalid_field"),
        (with_(user_id=""), "invalid_field"),
        (with_(user_id="bad\x00id"), "invalid_field"),
        (with_(request_type="x" * 65), "invalid_field"),
        (with_(request_id=["a"]), "invalid_field"),
        (with_(ip="999.1.1.1"), "invalid_ip"),
        (with_(ip="not-an-ip"), "invalid_ip"),
        (with_(ts=now + 86_400), "future_timestamp"),
        (with_(request_type="x" * 9000), "too_large"),
    ]


def test_malformed_events_reach_the_dead_letter_topic_and_valid_ones_are_still_decided(make_core_pipeline):
    pipeline = make_core_pipeline()
    pipeline.start_worker()
    cases = malformed(time.time())
    assert len({reason for _, reason in cases}) == 6 and len(cases) >= 20
    with RequestPublisher(pipeline.settings) as publisher:
        for i, (payload, _) in enumerate(cases):
            publisher.publish_raw(f"bad-{i}".encode(), payload)
    valid = [RequestEvent(f"after-{i}", f"u{i % 3}", "2001:db8::1", "read", GOOD["ts"] + i) for i in range(30)]
    decisions = pipeline.replay(valid)
    assert [d.request_id for d in decisions] == [e.request_id for e in valid]
    assert all(d.verdict == "allow" for d in decisions)

    letters = pipeline.read_topic(pipeline.settings.dead_letter_topic)
    decode = msgspec.json.Decoder(DeadLetter).decode
    by_key = {record.key: decode(record.value) for record in letters}
    assert len(letters) == len(cases)
    for i, (payload, reason) in enumerate(cases):
        letter = by_key[f"bad-{i}".encode()]
        assert letter.reason == reason, (payload, letter)
        assert letter.detail
        assert letter.payload.encode("latin-1") == (payload or b"")
        assert letter.topic == pipeline.settings.requests_topic and letter.offset >= 0
    decided = {msgspec.json.decode(r.value)["request_id"] for r in pipeline.read_topic(pipeline.settings.decisions_topic)}
    assert decided == {e.request_id for e in valid}
