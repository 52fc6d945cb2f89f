"""Checks a decoded ``RateLimitRequest`` against the configured bounds before the engine sees it.

The reference (envoyproxy/ratelimit) refuses only an empty domain and an empty descriptor list; the
other bounds are ours, because every descriptor entry becomes a counter key and a hits addend a
counter increment: one call must not be able to make the engine do unbounded work or store
unbounded keys. A refusal is ``InvalidCall`` (gRPC ``INVALID_ARGUMENT``, HTTP 400 on ``/json``)
with a message saying which bound and where, and a short ``reason`` for the metrics.

The checks walk the message once; a string's UTF-8 length is computed only when its length in
characters cannot settle it (a character is 1 to 4 bytes).
"""

from typing import NamedTuple

from streams.settings_sections import RlsSettings

__all__ = ["Bounds", "DEFAULT_BOUNDS", "Descriptors", "InvalidCall", "validate"]

Descriptors = list[list[tuple[str, str]]]


class InvalidCall(ValueError):
    """A request outside the bounds; ``message`` is what the caller is told, ``reason`` the metric label."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.message, self.reason = message, reason


class Bounds(NamedTuple):
    """The ``rls_max_*`` settings, read once (a call reads plain attributes, not the settings model)."""

    max_descriptors: int = 64
    max_entries: int = 16
    max_entry_bytes: int = 1_024
    max_hits_addend: int = 1_000_000

    @classmethod
    def from_settings(cls, settings: RlsSettings) -> "Bounds":
        """The bounds of ``settings`` (any object with the ``rls_max_*`` fields, e.g. the whole ``Settings``)."""
        return cls(settings.rls_max_descriptors, settings.rls_max_entries, settings.rls_max_entry_bytes,
                   settings.rls_max_hits_addend)


DEFAULT_BOUNDS = Bounds.from_settings(RlsSettings())


def _too_long(text: str, limit: int) -> bool:
    """``text`` is longer than ``limit`` bytes in UTF-8."""
    n = len(text)
    if n * 4 <= limit:
        return False
    return n > limit or len(text.encode("utf-8", "surrogatepass")) > limit


def validate(request, bounds: Bounds = DEFAULT_BOUNDS) -> tuple[str, Descriptors, int | list[int]]:
    """``(domain, descriptors, hits)`` of a ``RateLimitRequest``; raises ``InvalidCall`` outside ``bounds``.

    ``hits_addend`` 0 (unset) counts 1 hit, as in the reference. When any descriptor sets its own
    ``hits_addend`` (0 allowed: check without counting), ``hits`` is a list, one per descriptor.
    """
    domain = request.domain
    if not domain:
        raise InvalidCall("rate limit domain must not be empty", "domain")
    max_bytes = bounds.max_entry_bytes
    if _too_long(domain, max_bytes):
        raise InvalidCall(f"rate limit domain is longer than {max_bytes} bytes", "entry_bytes")
    request_descriptors = request.descriptors
    count = len(request_descriptors)
    if count == 0:
        raise InvalidCall("rate limit descriptor list must not be empty", "descriptors")
    if count > bounds.max_descriptors:
        raise InvalidCall(f"{count} descriptors: at most {bounds.max_descriptors} are allowed", "too_many_descriptors")
    hits = request.hits_addend or 1
    if hits > bounds.max_hits_addend:
        raise InvalidCall(f"hits_addend {hits} is above the maximum {bounds.max_hits_addend}", "hits_addend")
    max_entries = bounds.max_entries
    quick = max_bytes // 4  # a string of at most this many characters is within the bound whatever they are
    descriptors: Descriptors = []
    per_descriptor: list[int] | None = None
    for i, descriptor in enumerate(request_descriptors):
        if descriptor.HasField("hits_addend"):
            own = descriptor.hits_addend.value
            if own > bounds.max_hits_addend:
                raise InvalidCall(f"descriptor {i}: hits_addend {own} is above the maximum {bounds.max_hits_addend}",
                                  "hits_addend")
            if per_descriptor is None:
                per_descriptor = [hits] * count
            per_descriptor[i] = own
        entries = descriptor.entries
        if not entries or len(entries) > max_entries:
            raise InvalidCall(f"descriptor {i} has {len(entries)} entries: it needs 1 to {max_entries}", "entries")
        pairs = []
        for j, entry in enumerate(entries):
            key, value = entry.key, entry.value
            if not key:
                raise InvalidCall(f"descriptor {i} entry {j}: the key must not be empty", "key")
            if (len(key) > quick and _too_long(key, max_bytes)) or (len(value) > quick and _too_long(value, max_bytes)):
                raise InvalidCall(f"descriptor {i} entry {j}: a key or value is longer than {max_bytes} bytes",
                                  "entry_bytes")
            pairs.append((key, value))
        descriptors.append(pairs)
    return domain, descriptors, hits if per_descriptor is None else per_descriptor
