"""Replays with bans on give identical verdicts (``RATEWARDEN_BAN_TIMING=event_time``).

The same simulated attack trace (12 minutes, 800 users: floods, stuffing, scrapers, rotations) is
replayed at full speed, twice, into fresh topics and state through the default worker (limiter,
history and analytics in one process). Bans happen in both — the analytics flag the attackers and the
limiter blocks them — and every request gets the same verdict and reason in both runs, because a ban
starts at its window's end plus ``ban_delay`` and the limiter waits for the analytics' horizon before
deciding past it (agents/ban_gate.py). A what-if over the second run's topics reproduces it too.
"""

import os
import subprocess
import sys
from collections import Counter

import pytest

from ratewarden.simulate import simulate

pytestmark = pytest.mark.kafka

MINUTES, USERS, SEED = 12, 800, 7
BLOCKS = ("ip_blocked", "network_blocked")


def run(make_pipeline, sim) -> tuple[object, dict[str, tuple[str, str]]]:
    """A fresh pipeline in ``event_time`` mode; the trace replayed through one default worker; (pipeline,
    verdict and reason per request)."""
    pipeline = make_pipeline(default_limit=100, ban_timing="event_time",
                             allowlist_cidrs=",".join(sim.labels["allowlist"]))
    pipeline.start_worker()
    decisions = pipeline.replay(sim.events, timeout=600)
    return pipeline, {d.request_id: (d.verdict, d.reason) for d in decisions}


def test_two_replays_with_bans_give_identical_verdicts(make_pipeline):
    sim = simulate(minutes=MINUTES, users=USERS, seed=SEED)
    _, first = run(make_pipeline, sim)
    second_pipeline, second = run(make_pipeline, sim)

    assert len(first) == len(second) == len(sim.events)
    reasons = Counter(reason for _, reason in first.values())
    assert sum(reasons[r] for r in BLOCKS) > 100, reasons  # bans happened, and were enforced
    assert reasons["rate_limited"] > 0, reasons
    differing = {rid: (first[rid], second[rid]) for rid in first if first[rid] != second[rid]}
    assert not differing, (f"{len(differing)} of {len(first)} verdicts differ, e.g. {list(differing.items())[:5]}; "
                           f"reasons {reasons}")

    # The what-if over the second run's topics, with the rules in force, reproduces it too.
    env = {**os.environ, **second_pipeline.settings.to_env(), "COLUMNS": "160"}
    whatif = subprocess.run([sys.executable, "-m", "ratewarden.cli", "whatif", "--from-topics"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert whatif.returncode == 0, whatif.stdout + whatif.stderr
    n = len(sim.events)
    assert f"{n:,} of {n:,} verdicts reproduced" in whatif.stdout, whatif.stdout
