"""``ratewarden whatif`` on what a real worker decided: a simulated attack trace (12 minutes, 800 users) paced
through a worker with analytics, so that bans happen; then the what-if over the recorded trace and decisions
(files, and the topics) with the limits in force reproduces every verdict and reason, blocks included, and a
candidate lowering one busy user's limit throttles exactly what an independent fixed-window count says."""

import math
import os
import subprocess
import sys
from collections import Counter, defaultdict

import pandas as pd
import pytest

from agents.ban_horizon import only_flags
from ratewarden.control import set_limits
from ratewarden.replay import write_decisions, write_trace
from ratewarden.simulate import simulate
from schemas.limits import RateLimit
from tests.integration.test_analytics_pipeline import first_decisions, paced_replay, wait_until

pytestmark = pytest.mark.kafka

MINUTES, USERS, SEED = 12, 800, 7
SPEED = 24.0  # 12 minutes of event time in 30 s: bans reach the limiter while the trace is still coming
LOWERED = 20  # the candidate limit of the busy user, per 60 s


def whatif(pipeline, *args: str) -> subprocess.CompletedProcess:
    """The real command, in a process of its own, on the pipeline's topics."""
    env = {**os.environ, **pipeline.settings.to_env(), "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "ratewarden.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_whatif_reproduces_a_run_with_bans_and_a_candidate_moves_what_an_oracle_counts(make_pipeline, tmp_path, capsys):
    sim = simulate(minutes=MINUTES, users=USERS, seed=SEED)
    events = sim.events
    pipeline = make_pipeline(default_limit=100, allowlist_cidrs=",".join(sim.labels["allowlist"]))
    # Limits of every algorithm and scope, in force before the worker starts.
    set_limits([
        RateLimit(user_id="acct-hammer", limit=100, window=60, algorithm="sliding"),
        RateLimit(user_id="acct-crawler-0", limit=120, window=60, algorithm="gcra", burst=10),
        RateLimit(user_id="acct-crawler-1", limit=150, window=60, shadow=True),
        RateLimit(user_id="acct-flood-1", request_type="login", limit=5, window=60),
    ], pipeline.settings)
    pipeline.start_worker()
    paced_replay(pipeline, events, SPEED)
    decided = wait_until(pipeline, lambda: first_decisions(pipeline), lambda got: len(got) == len(events))
    decisions = [decided[e.request_id] for e in events]
    reasons = Counter(d.reason for d in decisions)
    assert reasons["ip_blocked"] + reasons["network_blocked"] > 0, reasons  # bans reached the limiter
    assert reasons["rate_limited"] and reasons["shadow:rate_limited"], reasons

    trace, recorded, flags = tmp_path / "trace.jsonl", tmp_path / "decisions.jsonl", tmp_path / "flags.jsonl"
    write_trace(trace, events)
    write_decisions(recorded, decisions)
    flag_values = only_flags(r.value for r in pipeline.read_topic(pipeline.settings.ip_flags_topic))
    flags.write_bytes(b"".join(value + b"\n" for value in flag_values))
    exported = whatif(pipeline, "limits", "list", "--json")
    assert exported.returncode == 0, exported.stderr
    in_force = tmp_path / "limits.jsonl"
    in_force.write_text(exported.stdout)
    assert len(exported.stdout.splitlines()) == 4

    # 1. The rules in force reproduce every verdict and reason, blocks included: from files and from the topics.
    files = ["whatif", "--trace", str(trace), "--decisions", str(recorded), "--flags", str(flags)]
    by_files = whatif(pipeline, *files, "--in-force", str(in_force))
    by_topics = whatif(pipeline, "whatif", "--from-topics")
    for run in (by_files, by_topics):
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"{len(events):,} of {len(events):,} verdicts reproduced" in run.stdout, run.stdout

    # 2. A candidate: one busy honest user, never throttled at 100 a minute, gets 20. Only its requests
    #    change, all from allow to throttle, as many as a plain fixed-window count says.
    per_user = defaultdict(list)
    for d in decisions:
        per_user[d.user_id].append(d)
    busy = max((u for u, ds in per_user.items() if u.startswith("user-0") and all(d.reason == "within_limit" for d in ds)),
               key=lambda u: len(per_user[u]))
    windows = Counter(math.floor(d.ts_event / 60) for d in per_user[busy])
    expected = sum(max(0, n - LOWERED) for n in windows.values())
    assert expected > 0
    out = tmp_path / "candidate"
    candidate = whatif(pipeline, *files, "--in-force", str(in_force), "--set", f"{busy}={LOWERED}/60", "--out", str(out))
    assert candidate.returncode == 0, candidate.stdout + candidate.stderr
    assert f"candidate: {expected:,} of {len(events):,} verdicts or reasons change" in candidate.stdout
    changed = pd.read_parquet(out / "changed.parquet")
    assert set(changed["user_id"]) == {busy} and len(changed) == expected
    assert set(zip(changed["recorded_verdict"], changed["verdict"])) == {("allow", "throttle")}
    users = pd.read_csv(out / "users.csv").set_index("user_id")
    assert users.loc[busy, "allow_to_throttle"] == expected and users["changed"].sum() == expected
    minutes = pd.read_parquet(out / "minutes.parquet")
    assert (minutes["throttle"] - minutes["recorded_throttle"]).sum() == expected
    assert (out / "users_hurt.png").read_bytes()[:4] == b"\x89PNG"

    # 3. A lower default: more throttled, never fewer, and blocked requests stay blocked as recorded.
    lower = whatif(pipeline, *files, "--in-force", str(in_force), "--default", "30/60", "--out", str(tmp_path / "low"))
    assert lower.returncode == 0, lower.stdout + lower.stderr
    low = pd.read_parquet(tmp_path / "low" / "changed.parquet")
    assert len(low) and not (low["recorded_verdict"] == "block").any() and not (low["verdict"] == "block").any()
    assert (low["verdict"] == "throttle").sum() > (low["verdict"] == "allow").sum()
    with capsys.disabled():
        print(f"\n[whatif] {len(events):,} events; recorded {dict(reasons)}\n[whatif] reproduction (files):\n"
              f"{by_files.stdout}\n[whatif] candidate {busy}={LOWERED}/60: {expected:,} allow->throttle, as the oracle "
              f"counts\n[whatif] default 30/60: {len(low):,} changed ({Counter(zip(low['recorded_verdict'], low['verdict']))})")
