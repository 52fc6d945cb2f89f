"""How the limiter's states are stored: the codec :class:`streams.state.PartitionStore` is given.

A stored value (RocksDB and the changelog topic) is one tag byte, ``state_id << 4 | state_version``
of the strategy that wrote it, followed by that strategy's payload. Values written before tags
existed are the window counter's untagged 32 bytes (``<dqqq``: window, index, count, previous); they
are read as version 0 of the window counter. So no tagged value may be 32 bytes long: a strategy's
payload is never 31 bytes (a unit test encodes one state of every strategy to hold this).

The codec knows the strategies from ``agents.strategies.registry``; strategies that share a state
type (fixed and sliding) share one tag.
"""

from typing import Any, Iterable

from agents.strategies.base import Strategy
from agents.strategies.registry import STRATEGIES

__all__ = ["LEGACY_SIZE", "STATE_CODEC", "StateCodec"]

#: Length of the untagged window counters written before tags existed.
LEGACY_SIZE = 32
_LEGACY_STATE_ID = 1  # the window counter's


class StateCodec:
    """Encodes any registered strategy's state with its tag, decodes tagged and legacy values."""

    def __init__(self, strategies: Iterable[Strategy]) -> None:
        self._by_type: dict[type, Strategy] = {}
        self._by_id: dict[int, Strategy] = {}
        self._tags: dict[type, bytes] = {}
        for strategy in strategies:
            if not 1 <= strategy.state_id <= 15 or not 0 <= strategy.state_version <= 15:
                raise ValueError(f"{strategy!r}: state_id must be 1-15 and state_version 0-15")
            known = self._by_id.setdefault(strategy.state_id, strategy)
            if known.state_type is not strategy.state_type:
                raise ValueError(f"{strategy!r} and {known!r} share state_id {strategy.state_id} but not a state type")
            self._by_type.setdefault(strategy.state_type, strategy)
            self._tags[strategy.state_type] = bytes([strategy.state_id << 4 | strategy.state_version])

    def encode(self, value: Any) -> bytes:
        kind = type(value)
        return self._tags[kind] + self._by_type[kind].encode_state(value)

    def decode(self, raw: bytes) -> Any:
        if len(raw) == LEGACY_SIZE:
            return self._by_id[_LEGACY_STATE_ID].decode_state(raw, 0)
        tag = raw[0]
        strategy = self._by_id.get(tag >> 4)
        if strategy is None:
            raise ValueError(f"stored state with unknown tag {tag:#04x} (state id {tag >> 4}): written by newer code?")
        return strategy.decode_state(raw[1:], tag & 0x0F)

    def expired(self, value: Any, watermark: float) -> bool:
        return self._by_type[type(value)].expired(value, watermark)


#: The codec of every registered strategy's state, for the limiter's partition stores.
STATE_CODEC = StateCodec(STRATEGIES.values())
