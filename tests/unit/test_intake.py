"""Intake decoding: every malformed payload maps to a stable reason; valid events pass untouched."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.intake import (
    DEAD_LETTER_MAX_PAYLOAD,
    REASONS,
    EventDecoder,
    Rejection,
    dead_letter_value,
)
from schemas.events import DeadLetter, RequestEvent

NOW = 1_700_000_000.0
SKEW = 300.0
FIELDS = ("request_id", "user_id", "ip", "request_type", "ts")
GOOD = {"request_id": "req-1", "user_id": "user-1", "ip": "203.0.113.7", "request_type": "search", "ts": NOW}


def payload(**changes: object) -> bytes:
    """GOOD with fields replaced; a value of ``...`` removes the field."""
    body = {k: v for k, v in {**GOOD, **changes}.items() if v is not ...}
    return json.dumps(body).encode()


def replace_raw(field: str, raw_value: bytes) -> bytes:
    """GOOD with one field's JSON text replaced verbatim (for things json.dumps will not write)."""
    body = {k: (f"@{k}@" if k == field else v) for k, v in GOOD.items()}
    return json.dumps(body).encode().replace(f'"@{field}@"'.encode(), raw_value)


@pytest.fixture
def decoder() -> EventDecoder:
    return EventDecoder(max_bytes=8192, max_future_skew=SKEW)


MALFORMED = [
    # nothing there
    ("none", None, "empty"),
    ("empty bytes", b"", "empty"),
    ("over 8 KiB", payload(request_type="x") + b" " * 8192, "too_large"),
    ("over 8 KiB of garbage", b"\x00" * 8193, "too_large"),
    # not JSON / not an object
    ("plain text", b"hello world", "not_json"),
    ("whitespace only", b"   \n", "not_json"),
    ("truncated JSON", payload()[:-5], "not_json"),
    ("JSON array", b'[{"request_id": "r"}]', "not_json"),
    ("JSON string", b'"request"', "not_json"),
    ("JSON number", b"42", "not_json"),
    ("JSON null", b"null", "not_json"),
    ("JSON true", b"true", "not_json"),
    ("trailing garbage", payload() + b" x", "not_json"),
    ("bad field then garbage", b'{"ts": true, garbage', "not_json"),
    ("invalid UTF-8 in a string", payload(user_id="@").replace(b"@", b"\xff\xfe"), "not_json"),
    ("latin-1 encoded body", payload(user_id="@").replace(b"@", "jos\u00e9".encode("latin-1")), "not_json"),
    ("overflowing number then garbage", b'{"ts": 1e400, garbage', "not_json"),
    ("overflowing number in an array", b"[1e400]", "not_json"),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + payload(), "not_json"),
    ("raw control char in a string", payload(user_id="@").replace(b"@", b"a\x01b"), "not_json"),
    ("lone surrogate escape", replace_raw("user_id", b'"\\ud800"'), "not_json"),
    ("NaN ts", replace_raw("ts", b"NaN"), "not_json"),
    ("Infinity ts", replace_raw("ts", b"Infinity"), "not_json"),
    ("-Infinity ts", replace_raw("ts", b"-Infinity"), "not_json"),
    ("deeply nested extra field", payload()[:-1] + b', "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", "not_json"),
    # missing fields
    *[(f"missing {f}", payload(**{f: ...}), "invalid_field") for f in FIELDS],
    ("empty object", b"{}", "invalid_field"),
    # wrong types
    ("request_id number", payload(request_id=123), "invalid_field"),
    ("user_id null", payload(user_id=None), "invalid_field"),
    ("ip number", payload(ip=3405803783), "invalid_field"),
    ("request_type list", payload(request_type=["search"]), "invalid_field"),
    ("ts string", payload(ts=str(NOW)), "invalid_field"),
    ("ts object", payload(ts={"s": NOW}), "invalid_field"),
    ("ts bool true", payload(ts=True), "invalid_field"),
    ("ts bool false", payload(ts=False), "invalid_field"),
    # out of bounds
    ("negative ts", payload(ts=-1.0), "invalid_field"),
    ("ts overflows a double", replace_raw("ts", b"1e400"), "invalid_field"),
    ("empty request_id", payload(request_id=""), "invalid_field"),
    ("empty user_id", payload(user_id=""), "invalid_field"),
    ("empty request_type", payload(request_type=""), "invalid_field"),
    ("over-long user_id", payload(user_id="u" * 129), "invalid_field"),
    ("over-long request_id", payload(request_id="r" * 129), "invalid_field"),
    ("over-long request_type", payload(request_type="t" * 65), "invalid_field"),
    ("over-long ip", payload(ip="1" * 46), "invalid_field"),
    ("one-char ip", payload(ip="1"), "invalid_field"),
    # unprintable text in ids (escaped, so it is valid JSON)
    ("NUL in user_id", payload(user_id="alice\x00"), "invalid_field"),
    ("newline in request_id", payload(request_id="r\n1"), "invalid_field"),
    ("ESC in request_type", payload(request_type="\x1b[31mred"), "invalid_field"),
    ("DEL in user_id", payload(user_id="a\x7fb"), "invalid_field"),
    ("C1 control in user_id", payload(user_id="a\x85b"), "invalid_field"),
    ("line separator in user_id", payload(user_id="a\u2028b"), "invalid_field"),
    # ip
    ("ipv4 octet out of range", payload(ip="999.1.1.1"), "invalid_ip"),
    ("garbage ip", payload(ip="not-an-ip"), "invalid_ip"),
    ("three-octet ipv4", payload(ip="10.0.1"), "invalid_ip"),
    ("ipv4 with leading zero", payload(ip="010.0.0.1"), "invalid_ip"),
    ("ipv4 with port", payload(ip="10.0.0.1:443"), "invalid_ip"),
    ("ipv4 with spaces", payload(ip=" 10.0.0.1 "), "invalid_ip"),
    ("ipv4 CIDR", payload(ip="10.0.0.0/8"), "invalid_ip"),
    ("bad ipv6 hextet", payload(ip="2001:db8::g"), "invalid_ip"),
    ("ipv6 two ::", payload(ip="2001::db8::1"), "invalid_ip"),
    ("ipv6 zone id", payload(ip="fe80::1%eth0"), "invalid_ip"),
    ("ipv6 zone id with NUL", payload(ip="fe80::1%\x00"), "invalid_ip"),
    ("hostname", payload(ip="localhost"), "invalid_ip"),
    # time
    ("ts far in the future", payload(ts=1e12), "future_timestamp"),
    ("ts just past the skew", payload(ts=NOW + SKEW + 0.001), "future_timestamp"),
    ("ts near max double", payload(ts=1.7e308), "future_timestamp"),
]


def test_malformed_table_is_big_and_distinct() -> None:
    assert len(MALFORMED) >= 24
    assert len({raw for _, raw, _ in MALFORMED}) == len(MALFORMED)
    assert len({name for name, _, _ in MALFORMED}) == len(MALFORMED)
    assert {reason for _, _, reason in MALFORMED} == set(REASONS)


@pytest.mark.parametrize(("raw", "reason"), [(raw, reason) for _, raw, reason in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_malformed_payload_is_rejected(decoder: EventDecoder, raw: bytes | None, reason: str) -> None:
    result = decoder.decode(raw, NOW)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result
    assert result.reason in REASONS
    assert isinstance(result.detail, str) and result.detail


@pytest.mark.parametrize(("raw", "detail"), [
    (payload(ts=...), "Object missing required field `ts`"),
    (payload(ts=True), "Expected `float`, got `bool` - at `$.ts`"),
    (payload(user_id=""), "Expected `str` of length >= 1 - at `$.user_id`"),
    (payload(ip="999.1.1.1"), "ip '999.1.1.1' is not an IPv4 or IPv6 address"),
    (payload(user_id="alice\x00"), "Non-printable character '\\x00' at index 5 - at `$.user_id`"),
    (b"[1]", "JSON is not an object: Expected `object`, got `array`"),
    (b"{", "Input data was truncated"),
])
def test_rejection_detail(decoder: EventDecoder, raw: bytes, detail: str) -> None:
    assert decoder.decode(raw, NOW).detail == detail


def test_too_large_boundary() -> None:
    small = EventDecoder(max_bytes=len(payload()))
    assert isinstance(small.decode(payload(), NOW), RequestEvent)
    assert small.decode(payload() + b" ", NOW).reason == "too_large"


VALID = [
    ("ipv4", payload(), GOOD),
    ("ipv6", payload(ip="2001:db8::1"), {**GOOD, "ip": "2001:db8::1"}),
    ("ipv6 full form", payload(ip="2001:0db8:0000:0000:0000:0000:0000:0001"),
     {**GOOD, "ip": "2001:0db8:0000:0000:0000:0000:0000:0001"}),
    ("ipv4-mapped ipv6", payload(ip="::ffff:192.0.2.1"), {**GOOD, "ip": "::ffff:192.0.2.1"}),
    ("ipv6 loopback", payload(ip="::1"), {**GOOD, "ip": "::1"}),
    ("int ts", payload(ts=1_700_000_000), {**GOOD, "ts": 1_700_000_000.0}),
    ("zero ts", payload(ts=0), {**GOOD, "ts": 0.0}),
    ("unknown extra fields", payload(region="eu", tags=[1, {"a": None}], v=2), GOOD),
    ("ts exactly now + skew", payload(ts=NOW + SKEW), {**GOOD, "ts": NOW + SKEW}),
    ("ts in the past", payload(ts=NOW - 86_400), {**GOOD, "ts": NOW - 86_400}),
    ("surrounding whitespace", b" \n" + payload() + b"\n", GOOD),
    ("unicode ids", payload(user_id="jos\u00e9-\u7528\u6237", request_type="b\u00fcsqueda"),
     {**GOOD, "user_id": "jos\u00e9-\u7528\u6237", "request_type": "b\u00fcsqueda"}),
    ("spaces and punctuation in ids", payload(request_id="a b|c:d"), {**GOOD, "request_id": "a b|c:d"}),
    ("max-length ids", payload(user_id="u" * 128, request_type="t" * 64),
     {**GOOD, "user_id": "u" * 128, "request_type": "t" * 64}),
]


@pytest.mark.parametrize(("raw", "expected"), [(r, e) for _, r, e in VALID], ids=[n for n, _, _ in VALID])
def test_valid_payload_is_accepted(decoder: EventDecoder, raw: bytes, expected: dict) -> None:
    event = decoder.decode(raw, NOW)
    assert event == RequestEvent(**expected)
    assert type(event.ts) is float


def test_bytearray_and_memoryview_are_accepted(decoder: EventDecoder) -> None:
    assert decoder.decode(bytearray(payload()), NOW) == RequestEvent(**GOOD)
    assert decoder.decode(memoryview(payload()), NOW) == RequestEvent(**GOOD)


def test_ip_cache_is_bounded_and_stays_correct() -> None:
    class SmallCache(EventDecoder):
        ip_cache_size = 3

    decoder = SmallCache()
    ips = [f"10.0.0.{i}" for i in range(10)]
    for _ in range(2):
        for ip in ips:
            assert decoder.decode(payload(ip=ip), NOW).ip == ip
            assert len(decoder._valid_ips) <= 3
        # a bad address is never cached, however often it repeats
        for _ in range(3):
            assert decoder.decode(payload(ip="999.1.1.1"), NOW).reason == "invalid_ip"
        assert "999.1.1.1" not in decoder._valid_ips


def test_cached_ip_still_checks_the_rest(decoder: EventDecoder) -> None:
    assert isinstance(decoder.decode(payload(), NOW), RequestEvent)
    assert decoder.decode(payload(ts=NOW + 10 * SKEW), NOW).reason == "future_timestamp"
    assert decoder.decode(payload(user_id="a\x00"), NOW).reason == "invalid_field"


def test_skew_is_configurable() -> None:
    strict = EventDecoder(max_future_skew=0.0)
    assert isinstance(strict.decode(payload(ts=NOW), NOW), RequestEvent)
    assert strict.decode(payload(ts=NOW + 1e-6), NOW).reason == "future_timestamp"


@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"max_future_skew": -1.0}, {"max_future_skew": float("nan")}])
def test_bad_constructor_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EventDecoder(**kwargs)


# --- properties --------------------------------------------------------------------------------

def _check_outcome(result: object) -> None:
    assert isinstance(result, (RequestEvent, Rejection))
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert isinstance(result.detail, str) and result.detail


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=9000))
def test_decode_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _check_outcome(EventDecoder().decode(raw, NOW))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
field_values = {
    "request_id": st.text(max_size=130) | json_values,
    "user_id": st.text(max_size=130) | json_values,
    "ip": st.sampled_from(["1.2.3.4", "::1", "999.1.1.1", "fe80::1%1", ""]) | st.ip_addresses().map(str) | json_values,
    "request_type": st.text(max_size=66) | json_values,
    "ts": st.floats(min_value=-1e3, max_value=NOW + 2 * SKEW) | json_values,
}


@settings(max_examples=500, deadline=None)
@given(body=st.fixed_dictionaries({}, optional=field_values), extra=st.dictionaries(st.text(max_size=8), json_values,
                                                                                     max_size=3))
def test_decode_never_raises_on_near_valid_objects(body: dict, extra: dict) -> None:
    raw = msgspec.json.encode({**extra, **body})
    _check_outcome(EventDecoder().decode(raw, NOW))


printable_id = st.text(st.characters(codec="utf-8").filter(str.isprintable), min_size=1, max_size=64)


@settings(max_examples=300, deadline=None)
@given(request_id=printable_id, user_id=printable_id, request_type=printable_id,
       ip=st.ip_addresses().map(str), ts=st.floats(min_value=0, max_value=NOW + SKEW))
def test_valid_events_round_trip(request_id: str, user_id: str, request_type: str, ip: str, ts: float) -> None:
    event = RequestEvent(request_id=request_id, user_id=user_id, ip=ip, request_type=request_type, ts=ts)
    assert EventDecoder().decode(msgspec.json.encode(event), NOW) == event


# --- dead letters ------------------------------------------------------------------------------

def _dead_letter(raw: bytes | None, rejection: Rejection = Rejection("not_json", "boom")) -> DeadLetter:
    value = dead_letter_value(raw, rejection, "requests", 3, 12345, NOW)
    assert isinstance(value, bytes)
    return msgspec.json.decode(value, type=DeadLetter)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=4096))
def test_dead_letter_round_trips_arbitrary_bytes(raw: bytes) -> None:
    record = _dead_letter(raw)
    assert record.payload.encode("latin-1") == raw
    assert record == DeadLetter(reason="not_json", detail="boom", payload=raw.decode("latin-1"),
                                topic="requests", partition=3, offset=12345, ts_rejected=NOW)


def test_dead_letter_of_every_byte_value() -> None:
    raw = bytes(range(256)) * 4
    assert _dead_letter(raw).payload.encode("latin-1") == raw


def test_dead_letter_without_payload() -> None:
    record = _dead_letter(None, Rejection("empty", "no payload"))
    assert (record.reason, record.detail, record.payload) == ("empty", "no payload", "")


def test_dead_letter_keeps_64_kib_at_most() -> None:
    exact = bytes(range(256)) * (DEAD_LETTER_MAX_PAYLOAD // 256)
    assert DEAD_LETTER_MAX_PAYLOAD == 65_536 == len(exact)
    record = _dead_letter(exact, Rejection("too_large", "big"))
    assert record.payload.encode("latin-1") == exact and record.detail == "big"

    record = _dead_letter(exact + b"tail", Rejection("too_large", "big"))
    assert record.payload.encode("latin-1") == exact
    assert record.detail.startswith("big")
    assert "truncated to the first 65536 of 65540 bytes" in record.detail


def test_dead_letter_for_a_real_rejection(decoder: EventDecoder) -> None:
    raw = payload(ip="999.1.1.1")
    rejection = decoder.decode(raw, NOW)
    record = _dead_letter(raw, rejection)
    assert record.reason == "invalid_ip" and record.detail == rejection.detail
    assert record.payload.encode("latin-1") == raw
