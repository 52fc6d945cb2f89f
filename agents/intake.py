"""Intake: raw Kafka value bytes in, a :class:`~schemas.events.RequestEvent` or a :class:`Rejection` out.

This runs once per request on the hot path, so the valid path is kept to a length check, one typed
``msgspec`` decode, a printable-text check of the three ids, an IP check (cached) and a time check.
Everything that explains *why* a payload is bad runs only after it has already failed.

Time is an argument: the caller passes the wall clock as ``now``; nothing here reads a clock.
Rejected payloads go to the dead-letter topic as :func:`dead_letter_value` records.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import NamedTuple

import msgspec

from schemas.events import DeadLetter, RequestEvent

__all__ = [
    "DEAD_LETTER_MAX_PAYLOAD",
    "REASONS",
    "EventDecoder",
    "Rejection",
    "dead_letter_value",
]

logger = logging.getLogger(__name__)

#: Stable rejection codes, in the order the checks run.
REASONS = ("empty", "too_large", "not_json", "invalid_field", "invalid_ip", "future_timestamp")

#: Raw bytes kept in a dead letter; anything beyond is cut off and the detail says so.
DEAD_LETTER_MAX_PAYLOAD = 64 * 1024

_TEXT_FIELDS = ("request_id", "user_id", "request_type")


class Rejection(NamedTuple):
    """Why a payload was not accepted: a stable code from :data:`REASONS` and an explanation."""

    reason: str
    detail: str


class EventDecoder:
    """Validates raw request-event payloads. One instance per worker; not thread-safe (IP cache)."""

    #: Valid IP strings remembered before the cache is cleared (the same addresses repeat).
    ip_cache_size = 65_536

    __slots__ = ("_decoder", "_max_bytes", "_max_future_skew", "_valid_ips")

    def __init__(self, max_bytes: int = 8192, max_future_skew: float = 300.0) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if not max_future_skew >= 0:  # also catches NaN
            raise ValueError(f"max_future_skew must be >= 0, got {max_future_skew}")
        self._max_bytes = max_bytes
        self._max_future_skew = float(max_future_skew)
        self._decoder = msgspec.json.Decoder(RequestEvent)
        self._valid_ips: dict[str, None] = {}

    def decode(self, raw: bytes | None, now: float) -> RequestEvent | Rejection:
        """Decode one Kafka value; never raises for any input bytes."""
        if not raw:
            return Rejection("empty", "no payload" if raw is None else "empty payload")
        if len(raw) > self._max_bytes:
            return Rejection("too_large", f"payload is {len(raw)} bytes, limit is {self._max_bytes}")
        try:
            event = self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return _explain_validation_error(raw, exc)
        except msgspec.DecodeError as exc:
            return Rejection("not_json", str(exc))
        except RecursionError:
            return Rejection("not_json", "JSON is nested too deeply")
        if not (event.request_id.isprintable() and event.user_id.isprintable()
                and event.request_type.isprintable()):
            return _explain_unprintable(event)
        if event.ip not in self._valid_ips:
            rejection = self._admit_ip(event.ip)
            if rejection is not None:
                return rejection
        if event.ts > now + self._max_future_skew:
            return Rejection(
                "future_timestamp",
                f"ts {event.ts!r} is {event.ts - now:.3f} s ahead of now {now!r} "
                f"(max skew {self._max_future_skew:g} s)",
            )
        return event

    def _admit_ip(self, ip: str) -> Rejection | None:
        """Slow path for an IP not yet cached: validate it and remember it if valid."""
        if "%" in ip:
            # A zone id ("fe80::1%eth0") names an interface on the sender's host: meaningless here,
            # and it would split one client over several keys (and may carry any characters).
            return Rejection("invalid_ip", f"ip {ip!r} carries an IPv6 zone id")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return Rejection("invalid_ip", f"ip {ip!r} is not an IPv4 or IPv6 address")
        if len(self._valid_ips) >= self.ip_cache_size:
            logger.debug("IP cache full (%d entries); clearing it", len(self._valid_ips))
            self._valid_ips.clear()
        self._valid_ips[ip] = None
        return None


def _explain_validation_error(raw: bytes, exc: msgspec.ValidationError) -> Rejection:
    """Tell 'valid JSON object with a bad field' apart from 'not a JSON object at all'.

    The typed decoder stops at the first bad field, so ``{"ts": true, garbage`` raises a
    ValidationError although it is not JSON; a full untyped parse settles it (slow path only).
    """
    try:
        is_object = isinstance(msgspec.json.decode(raw), dict)
    except msgspec.ValidationError:
        # Even untyped, a number can overflow a double ("1e400"); check the syntax by skipping.
        try:
            msgspec.json.decode(raw, type=msgspec.Raw)
        except msgspec.DecodeError as parse_exc:
            return Rejection("not_json", str(parse_exc))
        except RecursionError:
            return Rejection("not_json", "JSON is nested too deeply")
        is_object = raw.lstrip()[:1] == b"{"
    except msgspec.DecodeError as parse_exc:
        return Rejection("not_json", str(parse_exc))
    except RecursionError:
        return Rejection("not_json", "JSON is nested too deeply")
    if not is_object:
        return Rejection("not_json", f"JSON is not an object: {exc}")
    return Rejection("invalid_field", str(exc))


def _explain_unprintable(event: RequestEvent) -> Rejection:
    for field in _TEXT_FIELDS:
        value: str = getattr(event, field)
        for index, char in enumerate(value):
            if not char.isprintable():
                return Rejection(
                    "invalid_field",
                    f"Non-printable character {char!r} at index {index} - at `$.{field}`",
                )
    raise AssertionError("unreachable: no unprintable character found")  # pragma: no cover


_dead_letter_encoder = msgspec.json.Encoder()


def dead_letter_value(
    raw: bytes | None,
    rejection: Rejection,
    topic: str,
    partition: int,
    offset: int,
    now: float,
) -> bytes:
    """The JSON value of a :class:`~schemas.events.DeadLetter` for a rejected payload.

    ``payload`` is the raw bytes decoded as latin-1, so any bytes survive and
    ``payload.encode("latin-1")`` recovers them. Payloads over :data:`DEAD_LETTER_MAX_PAYLOAD`
    bytes keep only their head, and ``detail`` records the cut.
    """
    data = b"" if raw is None else bytes(raw)
    detail = rejection.detail
    if len(data) > DEAD_LETTER_MAX_PAYLOAD:
        detail = f"{detail} [payload truncated to the first {DEAD_LETTER_MAX_PAYLOAD} of {len(data)} bytes]"
        data = data[:DEAD_LETTER_MAX_PAYLOAD]
    record = DeadLetter(
        reason=rejection.reason,
        detail=detail,
        payload=data.decode("latin-1"),
        topic=topic,
        partition=partition,
        offset=offset,
        ts_rejected=now,
    )
    return _dead_letter_encoder.encode(record)
