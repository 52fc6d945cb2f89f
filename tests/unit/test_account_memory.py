"""The bounded "seen before" memory of accounts (agents/account_memory.py): new vs seen, expiry by
event time, no false negatives against an exact reference, the false-positive rate and sizing."""

import logging
import math
import random

import pytest

from agents.account_memory import AccountMemory

SPAN = 600.0
T0 = 1_733_000_400.0  # a multiple of SPAN


def exact_new(reference: dict[str, float], accounts: set[str], at: float, memory: AccountMemory) -> set[str]:
    """The accounts truly not seen in a live generation of ``at``: the reference is account -> last seen."""
    live_from = math.floor(at / memory.span) - memory.generations + 1
    return {a for a in accounts if a not in reference or math.floor(reference[a] / memory.span) < live_from}


def test_new_then_seen_across_windows():
    memory = AccountMemory(capacity=1_000, span=SPAN, generations=4)
    assert not memory.seen("alice") and memory.warm_since is None
    assert memory.add_window(["alice", "bob", "alice"], T0 + 60) == {"alice", "bob"}
    assert memory.add_window(["bob", "carol"], T0 + 120) == {"carol"}
    assert memory.add_window(["alice", "dave"], T0 + SPAN + 60) == {"dave"}  # alice is in an older generation
    assert memory.seen("alice") and memory.seen("dave") and not memory.seen("erin")
    assert memory.warm_since == T0 + 60 and memory.saturated == 0


def test_empty_window_changes_nothing_but_time():
    memory = AccountMemory(capacity=1_000, span=SPAN, generations=2)
    assert memory.add_window([], T0) == set() and memory.nbytes == 0 and memory.warm_since == T0
    memory.add_window(["alice"], T0 + 60)
    assert memory.add_window(iter(()), T0 + 3 * SPAN) == set()
    assert not memory.seen("alice") and memory.nbytes == 0  # an empty window still moves event time on


def test_expiry_after_generations_times_span_and_not_before():
    memory = AccountMemory(capacity=1_000, span=SPAN, generations=3)
    memory.add_window(["alice"], T0)  # at the start of a generation: remembered exactly 3 spans
    memory.add_window(["bob"], T0 + SPAN - 1)  # at the end of one: at least 2 spans, less than 3
    memory.add_window(["carol"], T0 + 3 * SPAN - 1)
    assert memory.seen("alice") and memory.seen("bob")
    memory.add_window([], T0 + 3 * SPAN)
    assert not memory.seen("alice") and not memory.seen("bob") and memory.seen("carol")
    assert memory.add_window(["alice", "bob"], T0 + 3 * SPAN + 60) == {"alice", "bob"}
    memory.add_window(["dave"], T0 + 6 * SPAN - 1)  # alice, bob last seen in the generation of T0 + 3 spans
    assert memory.seen("alice") and memory.seen("bob") and not memory.seen("carol")
    memory.add_window([], T0 + 6 * SPAN)
    assert not memory.seen("alice") and memory.seen("dave")


def test_expiry_follows_event_time_of_windows_only():
    memory = AccountMemory(capacity=1_000, span=SPAN, generations=2)
    memory.add_window(["alice"], T0 + 10)
    for minute in range(1, 20):  # many windows within one span: nothing expires
        memory.add_window([f"x{minute}"], T0 + 10 + minute)
    assert memory.seen("alice")
    memory.add_window(["bob"], T0 + 100 * SPAN)  # a gap of event time drops every older generation
    assert not memory.seen("alice") and not memory.seen("x3") and memory.nbytes == (memory.bits + 7) // 8


def test_windows_must_arrive_in_order():
    memory = AccountMemory(capacity=1_000, span=SPAN)
    memory.add_window(["alice"], T0 + 120)
    assert memory.add_window(["bob"], T0 + 120) == {"bob"}  # the same end time twice is fine
    with pytest.raises(ValueError):
        memory.add_window(["carol"], T0 + 60)
    assert not memory.seen("carol") and memory.warm_since == T0 + 120


def test_no_false_negatives_against_an_exact_reference():
    rng = random.Random(7)
    memory = AccountMemory(capacity=2_000, error_rate=0.02, span=SPAN, generations=5)
    reference: dict[str, float] = {}
    fresh = reported_seen = 0
    for w in range(300):  # 300 windows of 60 s: 30 spans, 6 expiry cycles
        at = T0 + 60 * (w + 1)
        accounts = {f"steady-{rng.randrange(3_000)}" for _ in range(40)} | {f"once-{w}-{i}" for i in range(30)}
        truly_new = exact_new(reference, accounts, at, memory)
        reported_new = memory.add_window(accounts, at)
        assert reported_new <= truly_new  # whatever was seen in a live generation is never reported new
        fresh += len(truly_new)
        reported_seen += len(truly_new - reported_new)
        reference.update(dict.fromkeys(accounts, at))
        live_from = math.floor(at / SPAN) - memory.generations + 1
        assert w % 10 or all(memory.seen(a) for a, last in reference.items() if math.floor(last / SPAN) >= live_from)
    assert reported_seen / fresh < 0.05  # false positives: rare, and only in the safe direction


def test_false_positive_rate_near_error_rate_at_capacity():
    memory = AccountMemory(capacity=20_000, error_rate=0.01, span=SPAN, generations=1)
    memory.add_window([f"member-{i}" for i in range(20_000)], T0)
    assert memory.saturated == 0
    probes = [f"stranger-{i}" for i in range(20_000)]
    rate = sum(memory.seen(p) for p in probes) / len(probes)
    assert 0.005 <= rate <= 0.02
    assert len(memory.add_window(probes, T0 + 60)) / len(probes) == pytest.approx(1 - rate, abs=1e-9)


def test_saturated_counts_windows_past_capacity_and_logs_once_per_generation(caplog):
    memory = AccountMemory(capacity=100, span=SPAN, generations=4)
    with caplog.at_level(logging.WARNING, logger="agents.account_memory"):
        memory.add_window([f"a{i}" for i in range(90)], T0)
        memory.add_window([f"a{i}" for i in range(90)], T0 + 60)  # the same accounts again: not counted twice
        assert memory.saturated == 0
        memory.add_window([f"b{i}" for i in range(20)], T0 + 120)
        memory.add_window([f"c{i}" for i in range(5)], T0 + 180)
        assert memory.saturated == 2 and len(caplog.records) == 1
        memory.add_window([f"d{i}" for i in range(150)], T0 + SPAN)
        assert memory.saturated == 3 and len(caplog.records) == 2
    assert caplog.records[0].args[2] == 100  # lazy arguments, formatted only if emitted


def test_nbytes_follows_the_bloom_formulas_and_is_bounded():
    memory = AccountMemory()  # 100,000 accounts at 1%, 24 generations of an hour
    bits = math.ceil(-100_000 * math.log(0.01) / math.log(2) ** 2)
    assert (memory.bits, memory.hashes) == (bits, round(bits / 100_000 * math.log(2))) == (958_506, 7)
    assert memory.nbytes == 0
    for hour in range(30):
        memory.add_window([f"u{hour}-{i}" for i in range(10)], T0 + 3_600 * hour)
        assert memory.nbytes == min(hour + 1, 24) * math.ceil(bits / 8)
    assert memory.nbytes == 24 * 119_814


def test_rejects_nonsense_sizes():
    for kwargs in ({"capacity": 0}, {"error_rate": 1.0}, {"span": 0.0}, {"generations": 0}):
        with pytest.raises(ValueError):
            AccountMemory(**kwargs)
