"""Several analytics workers: each scores only its share of the subjects (its ``ip-features`` partitions,
keyed by network, so a network and its addresses meet in one shard), against that share's median and
MAD. Over simulated traces (several seeds), split every window's rows by the system's partitioner and
Kafka's assignors, run ``detect`` per shard and compare with one worker.

Two workers flag exactly the same subjects, with the same rules, in the same windows as one. With four,
the only difference is the bound documented in docs/analytics.md ("Several workers"): the campaign
rules (``low_and_slow``, ``distributed_stuffing``) count the sources of their shape *in the shard*, so
where a shard holds fewer than the minimum of them it does not flag them; they never flag what one
worker would not, and every other rule is unaffected.
"""

from collections import Counter

import pandas as pd
import pytest

from agents.account_features import WindowFeatures
from agents.detector_rules import CAMPAIGNS
from agents.detectors import base_frame, derive, detect, judged, parse_networks
from agents.ip_windows import IpWindow, WindowAggregator
from ratewarden.simulate import simulate
from streams.kafka_io import partition_for
from streams.settings import Settings

W = 60.0
SEEDS = (7, 8, 9)


def window_frames(events, settings, limit: int = 100) -> dict[float, pd.DataFrame]:
    """Each window's feature frame, through the stage-1 aggregator and the stage-2 row (fixed-window verdicts)."""
    seen: Counter = Counter()
    aggregator, rows = WindowAggregator(W, 5.0, WindowFeatures(settings.detectors)), {}

    def take(closed) -> None:
        for ip, partial in aggregator.partials(0, closed):
            merged = IpWindow(partial.first_seen, 0)
            merged.merge(partial)
            rows.setdefault(partial.window_start, []).append(merged.row(ip))

    for offset, e in enumerate(events):
        seen[(e.user_id, e.ts // W)] += 1
        verdict = "allow" if seen[(e.user_id, e.ts // W)] <= limit else "throttle"
        aggregator.add(e.ip, e.user_id, e.request_type, verdict, e.ts, offset, e.status)
        take(aggregator.close())
    take(aggregator.close(watermark=events[-1].ts + W))
    return {start: base_frame(r) for start, r in rows.items()}


def owners(frame: pd.DataFrame, partitions: int) -> pd.Series:
    """The ``ip-features`` partition of each row: its network's when it has one (``WindowAggregator.partials``)."""
    key = frame["network"].where(frame["network"] != "", frame["ip"])
    return key.map(lambda k: partition_for(k.encode(), partitions))


def assignment(partitions: int, workers: int, strategy: str) -> list[set[int]]:
    """Partitions per worker as Kafka's range (contiguous, the first ones one more) or round-robin assignor."""
    if strategy == "roundrobin":
        return [{p for p in range(partitions) if p % workers == w} for w in range(workers)]
    share, extra = divmod(partitions, workers)
    out, first = [], 0
    for w in range(workers):
        n = share + (w < extra)
        out.append(set(range(first, first + n)))
        first += n
    return out


def flagged(frames, settings, shards=None, partitions: int = 1) -> set[tuple[float, str, tuple[str, ...]]]:
    """(window, ip, rules) of every flag, one ``detect`` per shard and window."""
    networks = parse_networks(settings.allowlist)
    out = set()
    for start, frame in frames.items():
        owner = owners(frame, partitions)
        for shard in shards or [set(range(partitions))]:
            part = frame[owner.isin(shard).to_numpy()].reset_index(drop=True)
            out |= {(start, f.ip, tuple(f.rules)) for f in detect(part, start, start + W, settings, networks)[0]}
    return out


@pytest.fixture(scope="module", params=SEEDS)
def trace(request):
    sim = simulate(minutes=30, users=2000, seed=request.param)
    settings = Settings(allowlist_cidrs=",".join(sim.labels["allowlist"]))
    frames = window_frames(sim.events, settings)
    return sim, settings, frames, flagged(frames, settings)


@pytest.mark.parametrize("partitions,strategy", [(4, "range"), (4, "roundrobin"), (8, "range")])
def test_two_workers_flag_the_same_ips_as_one(trace, partitions, strategy):
    sim, settings, frames, one = trace
    assert {ip for _, ip, _ in one} >= set(sim.labels["attackers"])  # a scenario with every kind of attack
    shards = assignment(partitions, 2, strategy)
    assert flagged(frames, settings, shards, partitions) == one


def shape_counts(frames, settings, shards, partitions, shape) -> dict[tuple[float, str], int]:
    """(window, subject) -> sources of a campaign's shape in that subject's shard and window."""
    out = {}
    for start, frame in frames.items():
        f = derive(frame, W)
        shaped = shape(f, settings) & judged(f, settings)
        owner = owners(f, partitions)
        for shard in shards:
            mine = owner.isin(shard).to_numpy()
            for ip in f.loc[mine, "ip"]:
                out[(start, ip)] = int((shaped & mine).sum())
    return out


@pytest.mark.parametrize("partitions", [4, 8])
def test_four_workers_differ_only_within_the_documented_campaign_bound(trace, partitions):
    sim, settings, frames, one = trace
    shards = assignment(partitions, 4, "range")
    many = flagged(frames, settings, shards, partitions)

    def other_rules(flags):
        rows = {(w, ip, tuple(r for r in rules if r not in CAMPAIGNS)) for w, ip, rules in flags}
        return {row for row in rows if row[2]}

    assert other_rules(many) == other_rules(one)  # every other rule: identical
    for rule, (shape, minimum) in CAMPAIGNS.items():
        campaign_one = {(w, ip) for w, ip, rules in one if rule in rules}
        campaign_many = {(w, ip) for w, ip, rules in many if rule in rules}
        assert campaign_one, rule  # the trace has the campaign
        assert campaign_many <= campaign_one  # a shard never flags what one worker would not
        counts = shape_counts(frames, settings, shards, partitions, shape)
        least = getattr(settings, minimum)
        # ... and misses exactly the campaign's sources whose shard held fewer than the minimum of its shape
        assert all(counts[key] < least for key in campaign_one - campaign_many), rule
        assert all(counts[key] >= least for key in campaign_many), rule
