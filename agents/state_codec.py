"""How the limiter's counters are stored: the codec :class:`streams.state.PartitionStore` is given."""

import struct

from agents.policy import Counter

__all__ = ["COUNTER_CODEC", "CounterCodec"]

_COUNTER = struct.Struct("<dqqq")


class CounterCodec:
    """A window counter as 32 bytes: window, index, count, previous count."""

    #: A counter is dropped this many windows after its own ended (the sliding window still reads it
    #: one window later; the slack covers out-of-order events).
    lag_windows = 3

    def encode(self, counter: Counter) -> bytes:
        return _COUNTER.pack(counter.window, counter.index, counter.count, counter.previous)

    def decode(self, raw: bytes) -> Counter:
        return Counter(*_COUNTER.unpack(raw))

    def expired(self, counter: Counter, watermark: float) -> bool:
        return (counter.index + self.lag_windows) * counter.window <= watermark


COUNTER_CODEC = CounterCodec()
