"""10,000 property-based malformed events reach the dead-letter topic; valid events are still decided."""

import json
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratewarden.client import RequestPublisher
from schemas.events import DeadLetter, RequestEvent

pytestmark = pytest.mark.kafka

FIELDS = ("request_id", "user_id", "ip", "request_type", "ts")
GOOD = {"request_id": "r", "user_id": "u", "ip": "203.0.113.7", "request_type": "read", "ts": 1_732_900_000.0}
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _encode(body: dict) -> bytes:
    return json.dumps(body).encode()


def malformed(now: float):
    """Payloads that are malformed by construction (never a valid RequestEvent)."""
    missing = st.sampled_from(FIELDS).map(lambda f: _encode({k: v for k, v in GOOD.items() if k != f}))
    mistyped = st.one_of(
        st.tuples(st.sampled_from(FIELDS[:4]), junk).map(lambda fv: _encode({**GOOD, fv[0]: fv[1]})),
        st.one_of(junk.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)), st.text(max_size=5),
                  st.integers(max_value=-1)).map(lambda v: _encode({**GOOD, "ts": v})),
    )
    bad_ip = st.text(min_size=1, max_size=20).filter(lambda t: not _is_ip(t)).map(lambda ip: _encode({**GOOD, "ip": ip}))
    future = st.floats(now + 3_600, now + 1e9).map(lambda ts: _encode({**GOOD, "ts": ts}))
    not_json = st.binary(min_size=1, max_size=64).filter(lambda b: not b.lstrip().startswith((b"{", b"[", b'"'))).filter(_not_json)
    too_large = st.integers(8_200, 20_000).map(lambda n: _encode({**GOOD, "request_type": "x" * n}))
    control = st.sampled_from(["\x00", "\x07", "\x1b", "\n"]).map(lambda c: _encode({**GOOD, "user_id": f"a{c}b"}))
    return st.one_of(missing, mistyped, bad_ip, future, not_json, too_large, control)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _not_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
        return False
    except (ValueError, UnicodeDecodeError):
        return True


def test_ten_thousand_fuzzed_malformed_events_all_become_dead_letters(make_core_pipeline):
    pipeline = make_core_pipeline()
    pipeline.start_worker()
    payloads: list[bytes] = []

    @settings(max_examples=10_000, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(malformed(time.time()))
    def collect(payload: bytes) -> None:
        payloads.append(payload)

    collect()
    assert len(payloads) >= 10_000
    with RequestPublisher(pipeline.settings) as publisher:
        for i, payload in enumerate(payloads):
            publisher.publish_raw(f"fuzz-{i}".encode(), payload)
    valid = [RequestEvent(f"valid-{i}", f"user-{i % 7}", "198.51.100.9", "read", GOOD["ts"] + i) for i in range(100)]
    decisions = pipeline.replay(valid, timeout=120)
    assert [d.request_id for d in decisions] == [e.request_id for e in valid]

    letters = pipeline.read_topic(pipeline.settings.dead_letter_topic)
    decode = msgspec.json.Decoder(DeadLetter).decode
    by_key = {r.key: decode(r.value) for r in letters}
    assert len(by_key) == len(payloads), "every malformed event must reach the dead-letter topic"
    for i, payload in enumerate(payloads):
        letter = by_key[f"fuzz-{i}".encode()]
        assert letter.reason in {"not_json", "invalid_field", "invalid_ip", "future_timestamp", "too_large"}
        assert letter.payload.encode("latin-1") == payload
    print(f"\n{len(payloads):,} fuzzed payloads, reasons:", dict(sorted(
        __import__("collections").Counter(letter.reason for letter in by_key.values()).items())))
