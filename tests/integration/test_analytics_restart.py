"""The analytics stages across a worker restart: every window is reported once, with every request
counted once (state is rebuilt from the committed offsets, not from a changelog)."""

import io
import math
import time
from collections import defaultdict

import msgspec
import pandas as pd
import pytest
from rich.console import Console

from ratewarden.abuse_reports import current_reports, window_totals
from ratewarden.reports import latest_abuse_reports, run_report
from ratewarden.simulate import simulate
from schemas.flags import AbuseReport

pytestmark = pytest.mark.kafka


def test_restarted_worker_reports_every_window_once_with_exact_counts(make_pipeline, tmp_path):
    sim = simulate(minutes=10, users=400, seed=5)
    events = sim.events
    # No source goes idle within the test: the trace's last windows stay open, so the reports are final.
    pipeline = make_pipeline(default_limit=100, allowlist_cidrs=",".join(sim.labels["allowlist"]), analytics_idle=600)
    s = pipeline.settings
    worker = pipeline.start_worker("first")
    half = len(events) // 2
    pipeline.replay(events[:half])
    assert pipeline.stop_worker(worker) == 0  # mid-trace: windows open in both stages
    pipeline.start_worker("second")
    pipeline.replay(events[half:])

    window = s.analytics_window
    expected_requests, expected_ips = defaultdict(int), defaultdict(set)
    for e in events:
        start = math.floor(e.ts / window) * window
        expected_requests[start] += 1
        expected_ips[start].add(e.ip)
    last_start = math.floor((events[-1].ts - s.analytics_grace) / window) * window - window
    decode = msgspec.json.Decoder(AbuseReport).decode
    deadline = time.monotonic() + 60
    while True:
        records = [decode(r.value) for r in pipeline.read_topic(s.abuse_reports_topic)]
        if any(r.window_start >= last_start for r in records):
            break
        assert time.monotonic() < deadline, f"no report for the window starting {last_start}"
        time.sleep(1)
    # First what would hide a loss: no window was forced out without a source, none needed a correction.
    assert [(r.window_start, r.missing_sources, r.late_partials, r.revision) for r in records
            if r.missing_sources or r.late_partials or r.revision] == []
    starts = [r.window_start for r in records]
    assert len(starts) == len(set(starts)), ("a window was reported twice", [(r.window_start, r.partitions, r.requests, r.ips) for r in records])
    reports = current_reports(records)
    assert starts == sorted(starts) and starts[0] == min(expected_requests)
    wanted = [w for w in sorted(expected_requests) if w <= last_start]
    assert starts[: len(wanted)] == wanted, "a window is missing"
    totals = window_totals(records)
    for r in reports[: len(wanted)]:
        assert (r.requests, r.ips) == (expected_requests[r.window_start], len(expected_ips[r.window_start])), r
        assert (totals[r.window_start]["requests"], totals[r.window_start]["ips"]) == (r.requests, r.ips)
    flagged = {f.ip for r in reports for f in r.flagged if not f.allowlisted and f.severity != "low"}
    assert flagged and flagged <= set(sim.labels["attackers"])
    low = {f.ip for r in reports for f in r.flagged if f.severity == "low"}  # reported only: retry bursts
    assert low <= set(sim.labels["attackers"]) | set(sim.labels["crowds"]), low

    # The analyst report straight from the topics (`ratewarden report --from-topics`).
    written = run_report(tmp_path / "report", settings=s, console=Console(file=io.StringIO()))
    assert {p.suffix for p in written} == {".csv", ".parquet", ".png"} and len(written) == 9
    ips = pd.read_parquet(tmp_path / "report" / "ips.parquet")
    assert ips.loc[ips["kind"] == "ip", "requests"].sum() == len(events)  # a flagged /64 repeats its addresses
    assert set(ips.loc[ips["flagged_windows"] > 0, "ip"]) == {f.ip for r in reports for f in r.flagged}
    newest = latest_abuse_reports(s, last=3)  # what the gateway's GET /reports/abuse can serve
    every = current_reports(decode(r.value) for r in pipeline.read_topic(s.abuse_reports_topic))
    assert newest == [msgspec.to_builtins(r) for r in every[-3:]]
