"""Stage 2 closes windows by event time over every source, never by a count of open windows.

The backlog case: after a restart the stage-1 consumers catch up one ``decisions`` partition after
another, so two of four sources can deliver many windows before the other two deliver any. Every
window must still be reported once, complete. Partials that arrive after a forced close correct
their window; re-published ones are recognised; all of it is counted.
"""

from agents.window_merger import WindowMerger
from schemas.flags import FeaturesWatermark, IpPartial

W = 60.0
T0 = 1_732_899_960.0
SOURCES = 4


def partial(ip: str, window: int, source: int, requests: int = 1) -> IpPartial:
    start = T0 + window * W
    return IpPartial(ip=ip, window_start=start, source=source, requests=requests, users=1, types={"read": requests},
                     throttled=0, blocked=0, first_seen=start + 1, last_seen=start + 2)


def deliver(merger: WindowMerger, source: int, windows: range, now: float, offset: list[int]) -> list:
    """What one source's stage 1 publishes for ``windows``: two IPs per window, then its watermark."""
    out = []
    for w in windows:
        for ip in (f"10.0.{source}.1", "203.0.113.9"):
            merger.add_partial(0, offset[0], partial(ip, w, source, requests=source + 1))
            offset[0] += 1
        merger.add_mark(0, FeaturesWatermark(source, T0 + (w + 1) * W), now=now)
        out += merger.ready(now)
    return out


def test_a_backlog_from_two_of_four_sources_over_many_windows_reports_every_window_complete():
    merger = WindowMerger(W, SOURCES, idle=30.0)
    merger.assign(0, now=0.0)
    offset = [0]
    windows = range(20)  # far more windows than the old cap of 8 open windows
    reported = deliver(merger, 0, windows, now=1.0, offset=offset) + deliver(merger, 1, windows, now=2.0, offset=offset)
    assert reported == [] and len(merger.windows) == 20, "no window closes while two live sources lag behind"
    assert merger.commit_offset(0, offset[0]) == 0
    reported = deliver(merger, 2, windows, now=3.0, offset=offset) + deliver(merger, 3, windows, now=4.0, offset=offset)
    assert [w.start for w in reported] == [T0 + w * W for w in windows]
    for w in reported:
        assert (w.revision, w.missing, w.late) == (0, [], 0)
        assert {ip: acc.requests for ip, acc in w.ips.items()} == {
            "10.0.0.1": 1, "10.0.1.1": 2, "10.0.2.1": 3, "10.0.3.1": 4, "203.0.113.9": 1 + 2 + 3 + 4,
        }
    assert merger.counts == {"corrected": 0, "duplicate": 0, "dropped": 0, "forced": 0}
    assert merger.windows == {} and merger.kept == {} and merger.commit_offset(0, offset[0]) == offset[0]


def test_a_partial_after_a_forced_close_corrects_its_window_and_is_counted():
    merger = WindowMerger(W, 2, idle=10.0)
    merger.assign(0, now=0.0)
    merger.add_partial(0, 0, partial("1.1.1.1", 0, 0, requests=5))
    merger.add_mark(0, FeaturesWatermark(0, T0 + W), now=1.0)
    assert merger.ready(now=5.0) == []  # source 1 may still be alive: wait
    [first] = merger.ready(now=10.5)  # the bounded wait is over: forced out without source 1
    assert (first.revision, first.missing, first.ips["1.1.1.1"].requests) == (0, [1], 5)
    assert merger.counts["forced"] == 1 and merger.commit_offset(0, 1) == 0, "kept: a new owner re-reads it"
    merger.add_partial(0, 1, partial("1.1.1.1", 0, 1, requests=2))  # source 1 was slow, not gone
    merger.add_partial(0, 2, partial("2.2.2.2", 0, 1, requests=1))
    merger.add_partial(0, 3, partial("2.2.2.2", 0, 1, requests=1))  # re-published: a duplicate
    [fixed] = merger.ready(now=11.0)
    assert (fixed.start, fixed.revision, fixed.late) == (T0, 1, 2)
    assert {ip: a.requests for ip, a in fixed.ips.items()} == {"1.1.1.1": 7, "2.2.2.2": 1}
    assert merger.counts == {"corrected": 2, "duplicate": 1, "dropped": 0, "forced": 1}
    merger.add_mark(0, FeaturesWatermark(1, T0 + W), now=12.0)
    assert merger.ready(now=12.0) == [] and merger.kept == {}, "every source covered it: nothing more to correct"
    merger.add_partial(0, 4, partial("3.3.3.3", 0, 1))
    assert merger.counts["duplicate"] == 2 and merger.ready(now=13.0) == []


def test_a_late_partial_for_a_window_no_longer_kept_is_counted_as_dropped():
    merger = WindowMerger(W, 2, idle=10.0, keep=2)
    merger.assign(0, now=0.0)
    for w in range(4):
        merger.add_partial(0, w, partial("1.1.1.1", w, 0))
        merger.add_mark(0, FeaturesWatermark(0, T0 + (w + 1) * W), now=20.0)
    assert [w.missing for w in merger.ready(now=20.0)] == [[1]] * 4
    assert sorted(merger.kept) == [T0 + 2 * W, T0 + 3 * W]
    merger.add_partial(0, 9, partial("1.1.1.1", 0, 1))  # window 0 was evicted from the kept ones
    merger.add_partial(0, 10, partial("1.1.1.1", 3, 1))
    assert merger.counts == {"corrected": 1, "duplicate": 0, "dropped": 1, "forced": 4}
    [fixed] = merger.ready(now=21.0)
    assert fixed.start == T0 + 3 * W and fixed.ips["1.1.1.1"].requests == 2


def test_a_stage_one_restart_republishing_an_open_window_counts_nothing_twice():
    merger = WindowMerger(W, 2, idle=10.0)
    merger.assign(0, now=0.0)
    for _ in range(2):  # source 0 publishes window 0, restarts before committing, publishes it again
        merger.add_partial(0, 0, partial("1.1.1.1", 0, 0, requests=3))
        merger.add_mark(0, FeaturesWatermark(0, T0 + W), now=1.0)
    merger.add_partial(0, 1, partial("1.1.1.1", 0, 1, requests=4))
    merger.add_mark(0, FeaturesWatermark(1, T0 + W), now=1.0)
    [window] = merger.ready(now=1.0)
    assert window.ips["1.1.1.1"].requests == 7 and merger.counts["duplicate"] == 1


def test_a_new_owner_given_the_committed_progress_reports_nothing_twice_and_still_corrects():
    old = WindowMerger(W, 2, idle=10.0)
    old.assign(0, now=0.0)
    for source in (0, 1):
        old.add_partial(0, source, partial("1.1.1.1", 0, source, requests=2))
        old.add_mark(0, FeaturesWatermark(source, T0 + W), now=1.0)
    old.add_partial(0, 2, partial("2.2.2.2", 1, 0, requests=5))  # window 1: source 1 goes quiet
    old.add_mark(0, FeaturesWatermark(0, T0 + 2 * W), now=1.0)
    assert [(w.start, w.missing) for w in old.ready(now=12.0)] == [(T0, []), (T0 + W, [1])]
    progress = old.progress(0)
    assert old.commit_offset(0, 3) == 2 and progress == {"done": T0 + 2 * W, "kept": [[T0 + W, [1]]]}

    new = WindowMerger(W, 2, idle=10.0)
    new.assign(0, now=100.0, progress=progress)
    new.add_partial(0, 2, partial("2.2.2.2", 1, 0, requests=5))  # re-read from the committed offset
    new.add_partial(0, 0, partial("1.1.1.1", 0, 0, requests=2))  # window 0 re-published by a stage 1 restart
    assert new.ready(now=101.0) == [] and new.counts["duplicate"] == 1
    new.add_partial(0, 3, partial("2.2.2.2", 1, 1, requests=1))  # source 1 catches up at last
    [fixed] = new.ready(now=102.0)
    assert (fixed.start, fixed.revision, fixed.ips["2.2.2.2"].requests) == (T0 + W, 1, 6)


def test_a_late_partial_of_a_taken_over_partition_corrects_its_kept_window_even_while_another_has_it_open():
    """The chaos soak's finding: a new owner of partitions 1 (fresh) and 3 (its predecessor forced window 0
    out without source 2) must not report partition 3 with only its late part: that share replaced the
    predecessor's and lost its requests."""
    merger = WindowMerger(W, 4, idle=10.0)
    merger.assign(3, now=0.0, progress={"done": T0 + W, "kept": [[T0, [2]]]})
    merger.assign(1, now=0.0)
    for source in (0, 1, 3):  # re-read from the committed offsets
        merger.add_partial(3, source, partial("3.3.3.3", 0, source, requests=10))
        merger.add_partial(1, source, partial("1.1.1.1", 0, source, requests=10))
    merger.add_partial(1, 9, partial("1.1.1.1", 0, 2, requests=10))
    merger.add_partial(3, 9, partial("3.3.3.3", 0, 2, requests=7))  # source 2 was paused, not gone
    for partition in (1, 3):
        for source in range(4):
            merger.add_mark(partition, FeaturesWatermark(source, T0 + W), now=1.0)
    [window] = merger.ready(now=1.0)
    assert (window.start, window.revision, window.partitions, window.late) == (T0, 1, {1, 3}, 1)
    assert {p: sum(a.requests for a in ips.values()) for p, ips in window.parts.items()} == {1: 40, 3: 37}
    assert merger.kept == {} and merger.counts["corrected"] == 1


def test_a_fresh_report_leaves_out_partitions_already_reported():
    merger = WindowMerger(W, 1, idle=10.0)
    merger.assign(0, now=0.0, progress={"done": T0 + W, "kept": []})
    merger.assign(1, now=0.0)
    merger.add_partial(0, 0, partial("9.9.9.9", 0, 0))  # re-published: a duplicate, not a fresh share
    merger.add_partial(1, 0, partial("8.8.8.8", 0, 0, requests=4))
    for p in (0, 1):
        merger.add_mark(p, FeaturesWatermark(0, T0 + W), now=1.0)
    [window] = merger.ready(now=1.0)
    assert window.partitions == {1} and set(window.ips) == {"8.8.8.8"} and merger.counts["duplicate"] == 1
