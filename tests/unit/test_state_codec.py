"""The stored state format: a tag byte and the strategy's payload; values written before tags existed
(32 untagged bytes, ``<dqqq``) still decode as window counters and decide as before."""

import struct

import pytest

from agents.policy import Rule, decide
from agents.state_codec import STATE_CODEC, StateCodec
from agents.strategies.registry import STRATEGIES
from agents.strategies.window import Counter
from schemas.events import RequestEvent

LEGACY = struct.Struct("<dqqq")


def test_a_legacy_untagged_counter_decodes_as_a_window_counter():
    raw = LEGACY.pack(60.0, 28_881_667, 7, 4)
    assert len(raw) == 32
    assert STATE_CODEC.decode(raw) == Counter(60.0, 28_881_667, 7, 4)


@pytest.mark.parametrize(("algorithm", "verdicts"), [("fixed", ["allow", "allow", "throttle"]),
                                                    ("sliding", ["throttle", "throttle", "throttle"])])
def test_a_legacy_counter_keeps_counting_under_fixed_and_sliding(algorithm, verdicts):
    window, index = 60.0, 28_881_667
    state = STATE_CODEC.decode(LEGACY.pack(window, index, 8, 10))
    rule = Rule("u1", 10, window, algorithm)
    got = []
    for i in range(3):
        ts = index * window + 1 + i
        d, (state,) = decide(RequestEvent(str(i), "u1", "203.0.113.7", "read", ts), [rule], [state], None, ts)
        got.append(d.verdict)
    assert got == verdicts
    assert STATE_CODEC.decode(STATE_CODEC.encode(state)) == state


def test_a_counter_is_written_tagged_and_read_back():
    counter = Counter(0.5, 3_000_000_001, 12, 30)
    raw = STATE_CODEC.encode(counter)
    assert raw[0] == 0x11 and raw[1:] == LEGACY.pack(*counter)
    assert STATE_CODEC.decode(raw) == counter


def test_unknown_tags_and_versions_fail_loudly():
    with pytest.raises(ValueError, match="unknown tag"):
        STATE_CODEC.decode(b"\xf1" + bytes(16))
    with pytest.raises(ValueError, match="newer"):
        STATE_CODEC.decode(b"\x1f" + LEGACY.pack(60.0, 1, 1, 1))


def test_expiry_follows_the_state_type():
    counter = Counter(60.0, 100, 1, 0)
    assert not STATE_CODEC.expired(counter, 60.0 * 102.5)
    assert STATE_CODEC.expired(counter, 60.0 * 103)


def test_strategies_sharing_an_id_must_share_a_state_type():
    fixed = STRATEGIES["fixed"]

    class Impostor:
        name, state_type, state_id, state_version, key_suffix = "impostor", tuple, fixed.state_id, 1, "\x1eimpostor"

    with pytest.raises(ValueError, match="share state_id"):
        StateCodec([fixed, Impostor()])
