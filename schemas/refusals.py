"""An address limit's refusal, carried to the limiter in a request event's record headers.

A gateway checks each request against the ``remote_address`` rules of the ``ratewarden`` domain
(``agents.event_rules``) before it publishes it. The address's counter is a descriptor counter on
``rls-hits``, keyed by the address, so its count is exact however many gateways and workers run.
An address over its limit does not make the request vanish: the gateway still publishes it, with
the header ``ratewarden-address-limit`` (an :class:`AddressRefusal` as JSON), so it gets its decision
on ``decisions`` like every request (history, analytics and consumers see it). The limiter throttles
it with reason ``rate_limited_address`` and counts it against none of the user's limits
(``agents.policy.decide_refused``). The refusal travels with the record, so a replay of the requests
topic gives the same decision.
"""

import msgspec

__all__ = ["ADDRESS_LIMIT_HEADER", "AddressRefusal", "address_refusal", "refusal_header"]

ADDRESS_LIMIT_HEADER = "ratewarden-address-limit"


class AddressRefusal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The numbers of the address limit that refused a request, as its counter answered."""

    rule: str  # the matched rule's path, e.g. ``remote_address`` or ``remote_address_203.0.113.7``
    limit: int  # requests_per_unit
    window: float  # seconds
    count: int  # the address's hits in the window, this one included
    reset_after: float  # seconds from the request until the window turns


_decode = msgspec.json.Decoder(AddressRefusal).decode
_encode = msgspec.json.Encoder().encode


def refusal_header(refusal: AddressRefusal) -> tuple[str, bytes]:
    return ADDRESS_LIMIT_HEADER, _encode(refusal)


def address_refusal(headers) -> AddressRefusal | None:
    """The refusal among a record's ``headers``, None without one; ValueError naming what is wrong with a bad one."""
    for name, value in headers:
        if name == ADDRESS_LIMIT_HEADER:
            try:
                refusal = _decode(value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ValueError(f"bad {ADDRESS_LIMIT_HEADER} header: {exc}") from None
            if not (refusal.window > 0 and refusal.reset_after >= 0 and refusal.limit >= 0):
                raise ValueError(f"bad {ADDRESS_LIMIT_HEADER} header: {refusal}")
            return refusal
    return None
