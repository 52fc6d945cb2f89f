"""The analytics state, pure: windows by event time in stage 1, completeness and merging in stage 2,
and the memory bound over a long trace (old windows are dropped)."""

import random
import tracemalloc

from agents.ip_windows import WindowAggregator
from agents.window_merger import WindowMerger
from streams.kafka_io import partition_for
from schemas.flags import FeaturesWatermark

W = 60.0
T0 = 1_732_899_960.0  # a multiple of 60


def test_aggregator_closes_a_window_once_event_time_passes_its_end_plus_grace():
    agg = WindowAggregator(W, grace=5.0)
    agg.add("1.1.1.1", "u1", "login", "allow", T0 + 1, offset=10)
    agg.add("1.1.1.1", "u2", "read", "throttle", T0 + 30, offset=11)
    agg.add("1.1.1.1", "u2", "read", "block", T0 + 59, offset=12)
    agg.add("2.2.2.2", "u3", "read", "allow", T0 + 62, offset=13)
    assert agg.close() == [] and agg.commit_offset(14) == 10
    agg.add("2.2.2.2", "u3", "read", "allow", T0 + 64.9, offset=14)
    assert agg.close() == []  # 64.9 - 5 < 60
    agg.add("2.2.2.2", "u3", "read", "allow", T0 + 65.0, offset=15)
    [(start, ips)] = agg.close()
    assert start == T0 and set(ips) == {"1.1.1.1"}
    [(ip, partial)] = list(agg.partials(3, [(start, ips)]))
    assert (partial.requests, partial.users, partial.types) == (3, 2, {"login": 1, "read": 2})
    assert (partial.throttled, partial.blocked, partial.source) == (1, 1, 3)
    assert (partial.first_seen, partial.last_seen) == (T0 + 1, T0 + 59)
    assert agg.closed_until == T0 + W and agg.commit_offset(16) == 13
    agg.add("1.1.1.1", "u9", "read", "allow", T0 + 10, offset=16)  # its window is closed: late, dropped
    assert agg.late == 1 and T0 not in [s for s, _ in agg.close(T0 + 200)]


def test_out_of_order_events_within_grace_still_count():
    agg = WindowAggregator(W, grace=10.0)
    for ts, offset in ((T0 + 58, 0), (T0 + 66, 1), (T0 + 59.5, 2), (T0 + 71, 3)):
        agg.add("1.1.1.1", "u1", "read", "allow", ts, offset)
    [(start, ips)] = agg.close()
    assert start == T0 and ips["1.1.1.1"].requests == 2 and agg.late == 0


def mark(source, until):
    return FeaturesWatermark(source=source, closed_until=until)


def partial_of(ip, start, source, requests=1, users=1, types=None):
    from schemas.flags import IpPartial

    return IpPartial(ip=ip, window_start=start, source=source, requests=requests, users=users,
                     types=types or {"read": requests}, throttled=0, blocked=0, first_seen=start + 1,
                     last_seen=start + 2)


def test_merger_waits_for_every_live_source_then_sums_partials():
    merger = WindowMerger(W, sources=2, idle=10.0)
    merger.assign(0, now=0.0)
    merger.add_partial(0, 100, partial_of("9.9.9.9", T0, 0, requests=3, users=2, types={"login": 3}))
    merger.add_mark(0, mark(0, T0 + W), now=1.0)
    assert merger.ready(now=1.0) == []  # source 1 has not closed the window and is not idle yet
    merger.add_partial(0, 101, partial_of("9.9.9.9", T0, 1, requests=4, users=1, types={"read": 4}))
    merger.add_mark(0, mark(1, T0 + W), now=2.0)
    [window] = merger.ready(now=2.0)
    start, acc = window.start, window.ips["9.9.9.9"]
    assert start == T0 and (acc.requests, acc.users, acc.types) == (7, 3, {"login": 3, "read": 4})
    assert acc.row("9.9.9.9")["top_type"] == "read" and acc.row("9.9.9.9")["logins"] == 3
    assert window.missing == [] and window.revision == 0
    merger.add_partial(0, 102, partial_of("9.9.9.9", T0, 1))  # re-published after the window was complete
    assert merger.counts["duplicate"] == 1 and merger.ready(now=3.0) == [] and merger.commit_offset(0, 103) == 103


def test_a_silent_source_counts_as_idle_after_the_idle_time():
    merger = WindowMerger(W, sources=2, idle=10.0)
    merger.assign(0, now=0.0)
    merger.add_partial(0, 5, partial_of("9.9.9.9", T0, 0))
    merger.add_mark(0, mark(0, T0 + W), now=1.0)
    assert merger.ready(now=9.0) == [] and merger.commit_offset(0, 6) == 5
    [window] = merger.ready(now=10.5)  # source 1 never spoke: idle after 10 s, the window is forced out
    assert window.start == T0 and window.missing == [1] and merger.counts["forced"] == 1


def test_revoked_partition_state_is_dropped():
    merger = WindowMerger(W, sources=1, idle=10.0)
    merger.assign(0, 0.0)
    merger.assign(1, 0.0)
    merger.add_partial(1, 7, partial_of("8.8.8.8", T0, 0))
    merger.revoke(1)
    assert merger.windows == {} and merger.assigned == {0: 0.0}


def test_partition_for_matches_kafkas_default_partitioner():
    from kafka.partitioner.default import murmur2

    for key in (b"203.0.113.7", b"2001:db8::1", b"x"):
        assert partition_for(key, 4) == (murmur2(key) & 0x7FFFFFFF) % 4


def _long_trace(windows: int, seed: int = 1):
    """~300 events a window from a churning population of IPs (new addresses all the time)."""
    rng = random.Random(seed)
    for w in range(windows):
        for i in range(300):
            ts = T0 + w * W + rng.uniform(0, W)
            yield f"10.{w % 250}.{rng.randrange(40)}.{i % 50}", f"u{rng.randrange(5000)}", "read", ts


def _run(windows: int) -> tuple[int, int, int]:
    """Run both stages over a long trace; the most windows and IPs either one ever held."""
    agg = WindowAggregator(W, grace=5.0)
    merger = WindowMerger(W, sources=1, idle=10.0)
    merger.assign(0, 0.0)
    most_windows = most_ips = offset = 0
    for n, (ip, user, kind, ts) in enumerate(_long_trace(windows)):
        agg.add(ip, user, kind, "allow", ts, n)
        if n % 50 == 0:
            for _, partial in agg.partials(0, agg.close()):
                merger.add_partial(0, offset, partial)
                offset += 1
            merger.add_mark(0, mark(0, agg.closed_until), now=n)
            merger.ready(now=n)
            held = len(agg.windows) + len(merger.windows) + len(merger.kept)
            most_windows = max(most_windows, held)
            most_ips = max(most_ips, sum(map(len, agg.windows.values())) +
                           sum(len(ips) for by_p in merger.windows.values() for ips in by_p.values()))
    return most_windows, most_ips, len(agg.first_offsets) + len(merger.first_offsets)


def test_state_stays_bounded_over_a_long_trace():
    short, long = _run(20), _run(500)  # 6,000 vs 150,000 events; IPs churn, nothing is kept for good
    assert long[0] <= 3 and long[0] == short[0], "windows held at once"
    assert long[1] <= 2 * 300 and long[2] <= 3, "IPs held at once and offsets tracked"


def test_memory_does_not_grow_with_the_length_of_the_trace():
    def peak(windows):
        tracemalloc.start()
        _run(windows)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(20), peak(200)
    assert large < small * 1.5, f"peak {large} bytes over 200 windows vs {small} over 20"
