"""The gateway benchmark's note on the worker's event-loop stalls, from the probe's histogram as served, and the
metrics page reader the benchmarks share (bench/metrics_page.py)."""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bench.gateway.loop_stalls import parse, stalls_note
from bench.metrics_page import MetricsPage
from streams.loop_lag import LOOP_LAG


def _page(lags: list[float]) -> MetricsPage:
    registry = CollectorRegistry()
    histogram = Histogram("ratewarden_event_loop_lag_seconds", "probe", registry=registry,
                          buckets=LOOP_LAG._upper_bounds[:-1])  # the worker's buckets
    for lag in lags:
        histogram.observe(lag)
    return MetricsPage(generate_latest(registry).decode())


def test_the_note_counts_the_ticks_of_the_run_only():
    before = parse(_page([0.001] * 100 + [0.03]))
    after = parse(_page([0.001] * 100 + [0.03] + [0.002] * 196 + [0.015, 0.02, 0.06, 0.3]))
    assert before == (101.0, 100.0, 101.0)
    assert stalls_note(before, after) == "worker loop: 2.00% of ticks >10 ms late, 2 >50 ms"


def test_no_probe_or_no_ticks_gives_no_note():
    assert parse(MetricsPage("some_other_metric 1.0\n")) is None
    assert stalls_note(None, (10.0, 10.0, 10.0)) == ""
    same = parse(_page([0.001]))
    assert stalls_note(same, same) == ""


def test_the_page_finds_a_sample_by_labels_and_sums_a_name_over_its_label_sets():
    registry = CollectorRegistry()
    decisions = Counter("decisions", "by verdict", ["verdict"], registry=registry)
    decisions.labels("allow").inc(3)
    decisions.labels("block").inc(2)
    page = MetricsPage(generate_latest(registry).decode())
    assert page.value("decisions_total", verdict="block") == 2.0
    assert page.value("decisions_total") is None  # no sample without labels
    assert page.total("decisions_total") == 5.0 and page.total("absent_total") == 0.0
