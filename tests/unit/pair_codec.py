"""A codec for the state tests: (expires_at, count) pairs, opaque to the store as any value is."""

import struct

__all__ = ["CODEC", "PairCodec"]

_PAIR = struct.Struct("<dq")


class PairCodec:
    """(expires_at, count) as 16 bytes; expired once the watermark reaches expires_at."""

    def encode(self, value: tuple[float, int]) -> bytes:
        return _PAIR.pack(*value)

    def decode(self, raw: bytes) -> tuple[float, int]:
        return _PAIR.unpack(raw)

    def expired(self, value: tuple[float, int], watermark: float) -> bool:
        return value[0] <= watermark


CODEC = PairCodec()
