"""``ratewarden advise --from-topics`` on what a real worker decided: honest users of known profiles and
attacks through a worker with analytics, a tier in force with members; the advice read from the topics
(requests, decisions, ip-flags, rate-limits) with the memberships in force as plans, and its files."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from ratewarden.control import assign_tier, set_tier_limits
from ratewarden.sim_profiles import simulate_profiles
from ratewarden.whatif_inputs import read_limits_file
from schemas.limits import TierLimit
from tests.integration.test_analytics_pipeline import first_decisions, paced_replay, wait_until

pytestmark = pytest.mark.kafka


def test_advise_from_topics_with_the_memberships_in_force(make_pipeline, tmp_path):
    sim = simulate_profiles(minutes=8, users=120, seed=5)
    pipeline = make_pipeline(default_limit=100)
    profiles = sim.labels["profiles"]
    plans = {u: ("busy" if p in ("heavy", "api") else "calm") for u, p in profiles.items()}
    set_tier_limits([TierLimit(tier="calm", limit=30, window=60), TierLimit(tier="busy", limit=150, window=60)],
                    pipeline.settings)
    for user, tier in plans.items():
        assign_tier(user, tier, pipeline.settings)
    pipeline.start_worker()
    paced_replay(pipeline, sim.events, 32.0)
    wait_until(pipeline, lambda: first_decisions(pipeline), lambda got: len(got) == len(sim.events))
    out = tmp_path / "advice"
    env = {**os.environ, **pipeline.settings.to_env(), "COLUMNS": "160"}
    done = subprocess.run([sys.executable, "-m", "ratewarden.cli", "advise", "--from-topics", "--plans", "in-force",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    tiers = pd.read_csv(out / "advice_tiers.csv").set_index("tier")
    assert set(tiers.index) == {"calm", "busy"} and tiers.loc["calm", "limit"] < tiers.loc["busy", "limit"]
    assert (tiers.throttled <= 0.001 * tiers.requests).all()
    users = pd.read_csv(out / "advice_users.csv")
    assert set(users.in_force_scope) == {"tier"}  # every profiled user is a member: its tier's limit in force
    assert {x.user_id for x in read_limits_file(out / "advice_tier_limits.jsonl")} == set(users.user)
