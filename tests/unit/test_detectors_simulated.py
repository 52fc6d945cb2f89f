"""The simulator, and the pure analytics path over a simulated trace (no broker): stage-1 windows ->
partials -> stage-2 merge -> detectors -> bans; then the analyst report on the result."""

import ipaddress
import json
import zlib
from collections import Counter

import msgspec
import pytest

from agents.account_features import WindowFeatures
from agents.crowd import CrowdBaseline
from agents.ip_windows import WindowAggregator
from agents.window_merger import WindowMerger
from agents.blocklist import next_ban
from agents.detectors import base_frame, detect, parse_networks
from ratewarden.cli import main as cli
from ratewarden.reports import build_frames, run_report
from ratewarden.simulate import simulate
from schemas.flags import FeaturesWatermark
from streams.settings import Settings

W = 60.0


@pytest.fixture(scope="module")
def sim():
    return simulate(minutes=30, users=2000, seed=7)


def analyse(events, settings, limit=100, sources=4):
    """The two stages and the detectors in one process, with a fixed-window oracle for the verdicts."""
    seen: Counter = Counter()
    stage1 = {p: WindowAggregator(W, settings.analytics_grace, WindowFeatures(settings.detectors)) for p in range(sources)}
    merger = WindowMerger(W, sources, idle=10.0)
    merger.assign(0, now=0.0)
    networks = parse_networks(settings.allowlist)
    baseline = CrowdBaseline(settings.crowd_baseline_windows)
    flags, decisions = [], []
    for offset, e in enumerate(events):
        seen[(e.user_id, e.ts // W)] += 1
        verdict = "allow" if seen[(e.user_id, e.ts // W)] <= limit else "throttle"
        decisions.append(dict(ts_event=e.ts, ip=e.ip, user_id=e.user_id, request_type=e.request_type,
                              verdict=verdict, reason="within_limit" if verdict == "allow" else "rate_limited"))
        source = zlib.crc32(e.user_id.encode()) % sources  # keyed by user, like the decisions topic
        agg = stage1[source]
        agg.add(e.ip, e.user_id, e.request_type, verdict, e.ts, offset, e.status)
        closed = agg.close()
        for _, partial in agg.partials(source, closed):
            merger.add_partial(0, offset, partial)
        if closed:
            merger.add_mark(0, FeaturesWatermark(source, agg.closed_until), now=0.0)
            for w in merger.ready(now=0.0):
                frame = base_frame(a.row(ip) for ip, a in w.ips.items())
                flags += detect(frame, w.start, w.start + W, settings.detectors, networks, baseline)[0]
    return flags, decisions


def test_simulator_is_deterministic_ordered_and_labelled(sim):
    again = simulate(minutes=30, users=2000, seed=7)
    assert again.events == sim.events and again.labels == sim.labels
    assert simulate(minutes=30, users=2000, seed=8).events != sim.events
    ts = [e.ts for e in sim.events]
    assert ts == sorted(ts) and len({e.request_id for e in sim.events}) == len(sim.events)
    assert 80_000 < len(sim.events) < 300_000
    assert len({e.user_id for e in sim.events if e.user_id.startswith("user-0")}) > 1900
    kinds = Counter(a["kind"] for a in sim.labels["attackers"].values())
    assert kinds == {"flood": 2, "credential_stuffing": 3, "scraper": 2, "hammering": 1, "low_and_slow": 24,
                     "ipv6_rotation": 1, "account_rotation": 1, "distributed_stuffing": 30}
    offices = sim.labels["offices"]
    assert 0 < sum(o["allowlisted"] for o in offices.values()) < len(offices)
    assert not set(offices) & set(sim.labels["attackers"])
    for source, attack in sim.labels["attackers"].items():
        inside = ipaddress.ip_network(source) if attack.get("network") else None
        first = min(e.ts for e in sim.events if e.ip == source or inside and ipaddress.ip_address(e.ip) in inside)
        assert attack["start"] <= first < attack["start"] + 60


def test_pure_analytics_on_the_simulated_trace_finds_every_attacker_and_no_office(sim):
    settings = Settings(allowlist_cidrs=",".join(sim.labels["allowlist"]))
    flags, _ = analyse(sim.events, settings)
    attackers, offices = sim.labels["attackers"], sim.labels["offices"]
    flagged = {f.ip for f in flags if not f.allowlisted}
    assert flagged == set(attackers)
    first = {}
    for f in flags:
        first.setdefault(f.ip, f)
    assert max((first[ip].window_end - a["start"]) / W for ip, a in attackers.items()) <= 2
    bans = {}
    for f in flags:
        ban = next_ban(bans.get(f.ip), f, settings, f.ip in offices and offices[f.ip]["allowlisted"])
        if ban is not None:
            bans[f.ip] = ban
    assert not set(bans) & set(offices)
    assert not set(bans) & set(sim.labels["crowds"])  # carrier-grade NAT, retry bursts: never banned
    repeat = next(ip for ip, a in attackers.items() if len(a["intervals"]) == 2)
    assert bans[repeat].offences == 2


def test_report_writes_tables_and_charts(sim, tmp_path):
    events = sim.events[:20_000]
    settings = Settings(allowlist_cidrs=",".join(sim.labels["allowlist"]))
    flags, decisions = analyse(events, settings)
    encode = msgspec.json.encode
    (tmp_path / "d.jsonl").write_bytes(b"".join(encode(d) + b"\n" for d in decisions))
    (tmp_path / "f.jsonl").write_bytes(b"".join(encode(f) + b"\n" for f in flags))
    frames = build_frames([encode(d) for d in decisions], [encode(f) for f in flags])
    assert frames.timeline["requests"].sum() == len(events)
    assert set(frames.ips.loc[frames.ips["flagged_windows"] > 0, "ip"]) == {f.ip for f in flags}
    assert cli(["report", "--decisions", str(tmp_path / "d.jsonl"), "--flags", str(tmp_path / "f.jsonl"),
                "--out", str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted([f"{t}.{x}" for t in ("flags", "ips", "timeline") for x in ("csv", "parquet")]
                           + ["requests_per_minute.png", "top_ips_by_score.png", "verdict_mix.png"])
    without_flags = run_report(tmp_path / "none", tmp_path / "d.jsonl")
    assert len(without_flags) == 9


def test_simulate_command_writes_trace_and_labels(tmp_path):
    assert cli(["simulate", "--minutes", "4", "--users", "100", "--seed", "3", "--out", str(tmp_path / "t.jsonl"),
                "--labels", str(tmp_path / "l.json")]) == 0
    lines = (tmp_path / "t.jsonl").read_bytes().splitlines()
    assert set(json.loads(lines[0])) == {"request_id", "user_id", "ip", "request_type", "ts", "status"}
    assert json.loads((tmp_path / "l.json").read_text())["events"] == len(lines)
