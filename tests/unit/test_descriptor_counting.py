"""The rate limit service's counting core: the reference's answers, as a pure function of counter and hit."""

import math

from hypothesis import given, strategies as st

from agents.descriptor_counting import count_hit
from agents.strategies.window import Counter
from schemas.descriptors import DescriptorHit

HOUR = 3600.0
T0 = 1_733_001_600.0  # 20 minutes into an hour


def hit(ts: float = T0, limit: int = 3, hits: int = 1, shadow: bool = False, algorithm: str = "fixed",
        window: float = HOUR) -> DescriptorHit:
    return DescriptorHit("r/0", "d", "c", "k", limit, window, algorithm, shadow, None, hits, ts)


def run(hits: list[DescriptorHit]):
    counter, answers = None, []
    for h in hits:
        answer, counter = count_hit(counter, h, h.ts)
        answers.append(answer)
    return answers, counter


def test_remaining_counts_down_and_every_hit_counts_also_over_the_limit():
    answers, counter = run([hit(T0 + i) for i in range(5)])
    assert [(a.code, a.remaining, a.count) for a in answers] == [
        ("OK", 2, 1), ("OK", 1, 2), ("OK", 0, 3), ("OVER_LIMIT", 0, 4), ("OVER_LIMIT", 0, 5)]
    assert counter.count == 5, "as a Redis INCRBY: over-limit hits count too"


def test_hits_addend_counts_n_and_is_over_when_the_count_after_exceeds_the_limit():
    answers, _ = run([hit(hits=2), hit(hits=2)])
    assert [(a.code, a.remaining) for a in answers] == [("OK", 1), ("OVER_LIMIT", 0)]


def test_zero_refuses_everything_and_shadow_answers_ok_with_nothing_remaining():
    assert count_hit(None, hit(limit=0), T0)[0].code == "OVER_LIMIT"
    answers, _ = run([hit(limit=1, shadow=True) for _ in range(3)])
    assert [(a.code, a.remaining) for a in answers] == [("OK", 0), ("OK", 0), ("OK", 0)]


def test_windows_are_epoch_aligned_units_and_reset_after_is_the_references_whole_seconds():
    answer, counter = count_hit(None, hit(ts=T0 + 0.75), T0)
    assert answer.reset_after == HOUR - (int(T0) % 3600) == 2400.0
    later, _ = count_hit(Counter(HOUR, counter.index, 99, 0), hit(ts=T0 + 2400), T0)
    assert (later.code, later.remaining) == ("OK", 2), "the next hour starts from zero"


def test_sliding_weighs_the_previous_window():
    full, counter = run([hit(limit=10, algorithm="sliding") for _ in range(10)])
    assert full[-1].remaining == 0
    half = T0 + HOUR - (T0 % HOUR) + HOUR / 2  # halfway through the next window
    answer, _ = count_hit(counter, hit(ts=half, limit=10, algorithm="sliding"), half)
    assert (answer.count, answer.remaining) == (6, 4)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=40), st.integers(0, 30))
def test_the_fixed_window_matches_a_plain_running_sum(addends, limit):
    answers, _ = run([hit(hits=n, limit=limit) for n in addends])
    total = 0
    for n, answer in zip(addends, answers):
        total += n
        assert answer.count == total
        assert (answer.code == "OVER_LIMIT") == (total > limit)
        assert answer.remaining == (0 if total > limit else limit - total)
        assert math.isclose(answer.window, HOUR)


def test_zero_hits_checks_without_counting():
    answers, counter = run([hit(), hit(), hit(hits=0), hit(hits=0)])
    assert [(a.code, a.remaining) for a in answers] == [("OK", 2), ("OK", 1), ("OK", 1), ("OK", 1)]
    assert counter.count == 2


def test_gcra_lets_a_burst_through_then_one_per_interval_and_refusals_do_not_count():
    h = dict(limit=60, window=60.0, algorithm="gcra")  # one a second, 2 more at once
    answers, state = [], None
    for ts, hits in ((T0, 1), (T0, 1), (T0, 1), (T0, 1), (T0 + 0.5, 1), (T0 + 1.0, 1), (T0 + 3.0, 2)):
        answer, state = count_hit(state, DescriptorHit("r/0", "d", "c", "k", hits=hits, ts=ts, burst=2, **h), ts)
        answers.append(answer)
    assert [a.code for a in answers] == ["OK", "OK", "OK", "OVER_LIMIT", "OVER_LIMIT", "OK", "OK"]
    assert [a.remaining for a in answers[:4]] == [2, 1, 0, 0]
    assert answers[3].reset_after == 3.0, "the bucket empties 3 s after three at once"
    zero, _ = count_hit(None, DescriptorHit("r/0", "d", "c", "k", hits=1, ts=T0, limit=0, window=60.0,
                                            algorithm="gcra"), T0)
    assert zero.code == "OVER_LIMIT"


def test_switching_algorithms_starts_a_fresh_state():
    _, counter = run([hit(limit=3), hit(limit=3), hit(limit=3)])
    answer, state = count_hit(counter, DescriptorHit("r/0", "d", "c", "k", 3, HOUR, "gcra", ts=T0), T0)
    assert answer.code == "OK" and type(state).__name__ == "GcraState"
    back, counter = count_hit(state, hit(limit=3), T0)
    assert (back.code, back.remaining) == ("OK", 2)
