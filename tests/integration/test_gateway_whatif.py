"""POST /whatif and GET /advice on a live gateway over what a real worker decided: a simulated attack trace
(with bans) replayed through a worker with limits and a tier in force; the what-if's answers against the
reproduction check and the CLI's ``run_whatif``, its bounds and roles; ``advise --publish`` then GET /advice."""

import io
import json
import os
import subprocess
import sys
from functools import partial

import pytest
from rich.console import Console

from ratewarden.control import assign_tier, set_limits, set_tier_limits
from ratewarden.gateway.testing import GatewayStack
from ratewarden.replay import replay
from ratewarden.simulate import simulate
from ratewarden.whatif import run_whatif
from ratewarden.whatif_inputs import from_topics
from ratewarden.whatif_limits import candidate_book, default_limit, limits_in_force, new_book, parse_set
from schemas.limits import RateLimit, TierLimit

pytestmark = pytest.mark.kafka

CALM = [f"user-{i:05d}" for i in range(0, 40)]  # members of the tier in force


@pytest.fixture(scope="module")
def recorded(kafka_bootstrap, tmp_path_factory):
    """A stack whose topics hold a recorded run: limits of several algorithms and a tier in force first."""
    sim = simulate(minutes=4, users=200, seed=3)
    with GatewayStack(kafka_bootstrap, tmp_path_factory.mktemp("whatif"), workers=0, default_limit=100,
                      allowlist_cidrs=",".join(sim.labels["allowlist"])) as stack:
        set_limits([RateLimit(user_id="acct-hammer", limit=100, window=60, algorithm="sliding"),
                    RateLimit(user_id="acct-crawler-0", limit=120, window=60, algorithm="gcra", burst=10)],
                   stack.settings)
        set_tier_limits([TierLimit(tier="calm", limit=40, window=60)], stack.settings)
        for user in CALM:
            assign_tier(user, "calm", stack.settings)
        stack.start_worker("w1")
        decisions = replay(sim.events, stack.settings, timeout=180, show_progress=False)
        assert len(decisions) == len(sim.events)
        yield stack, sim.events


def _range(events) -> dict:
    return {"since": events[0].ts, "until": events[-1].ts + 1}


def _post(stack, body: dict, role: str = "analyst"):
    with stack.client(role) as client:
        return client.post("/whatif", json=body)


def _show(capsys, what: str, answer: dict) -> None:
    with capsys.disabled():
        print(f"\n[whatif] {what}:\n{json.dumps(answer, indent=2)}")


def test_the_rules_in_force_reproduce_every_recorded_verdict(recorded, capsys):
    stack, events = recorded
    answer = _post(stack, _range(events), "admin")
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert not got["candidate"] and got["events"] == len(events) == got["reproduced"] and got["changed"] == 0
    assert got["rules"] == {"default": "100/60/fixed", "limits": 2, "tiers": 1, "changes": []}
    assert got["changed_by_transition"] == {} and got["hurt"] == []
    assert sum(got["transitions"].values()) == len(events)
    _show(capsys, "the rules in force", got)


def test_a_stricter_candidate_changes_verdicts_as_the_clis_run_whatif_counts(recorded, capsys):
    stack, events = recorded
    busy = max(CALM, key=lambda u: sum(e.user_id == u for e in events))
    body = {**_range(events), "default": "30/60", "set": [f"{busy}=5/60"], "set_tier": ["calm=10/60"], "top": 5}
    answer = _post(stack, body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["candidate"] and got["changed"] > 0 and got["changed_by_transition"].get("allow->throttle", 0) > 0

    settings = stack.settings
    book = limits_in_force(settings, new_book(default_limit("30/60", settings)))
    candidate_book(book, None, [parse_set(f"{busy}=5/60")], [TierLimit(tier="calm", limit=10, window=60)])
    source = partial(from_topics, settings, body["since"], body["until"])
    run = run_whatif(source, book, console=Console(file=io.StringIO()), top=5, show_progress=False, is_candidate=True)
    assert (got["events"], got["reproduced"], got["changed"]) == (run.diff.total, run.diff.reproduced, len(run.diff.changed))
    assert got["transitions"] == dict(run.diff.transitions) and got["from_flagged"] == run.diff.from_flagged
    assert [(h["user_id"], h["allow_to_throttle"]) for h in got["hurt"]] == run.diff.hurt
    assert got["from_flagged"] > 0 and got["flagged_sources"] > 0
    _show(capsys, f"candidate {body}", got)


def test_roles_keys_and_bad_candidates(recorded):
    stack, events = recorded
    for role in ("client", "service"):
        assert _post(stack, _range(events), role).status_code == 403
    with stack.client(None) as anonymous:
        assert anonymous.post("/whatif", json=_range(events)).status_code == 401
        assert anonymous.get("/advice").status_code == 401
    cases = {
        "no requests of user 'nobody'": {"set": ["nobody=5/60"]},
        "unknown tier 'gold'": {"set_tier": ["gold=5/60"]},
        "expected LIMIT/WINDOW": {"default": "fast"},
        "until must be after since": {"until": events[0].ts},
        "not a time": {"since": "yesterday"},
        "Extra inputs": {"limit": 5},
        "rules: no rules for the ratewarden domain": {"rules": "domain: edge\ndescriptors: []\n"},
        "rules: line 3: the ratewarden domain takes the key": {"rules": "domain: ratewarden\ndescriptors:\n  - key: route\n"},
    }
    for message, change in cases.items():
        answer = _post(stack, {**_range(events), **change})
        assert answer.status_code == 422 and message in answer.text, (message, answer.text)


def test_a_rules_file_for_the_stream_is_a_candidate(recorded):
    stack, events = recorded
    rules = "domain: ratewarden\ndescriptors:\n  - key: user_id\n    rate_limit: {unit: minute, requests_per_unit: 3}\n"
    answer = _post(stack, {**_range(events), "rules": rules})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["candidate"] and got["rules"]["changes"] == ["rules: 1 top-level rules of ratewarden"]
    # 3 a minute for every user without a record or tier of its own: far below what most of them sent
    assert got["changed_by_transition"].get("allow->throttle", 0) > 100


def test_the_bounds_answer_with_what_they_are(recorded):
    stack, events = recorded
    answer = _post(stack, {"since": events[0].ts, "until": events[0].ts + 2 * 86_400})
    assert answer.status_code == 422 and "at most 86,400 s" in answer.json()["detail"]
    gateway = stack.gateway.gateway
    settings = gateway.settings
    try:
        gateway.settings = settings.model_copy(update={"gateway_whatif_max_events": 100})
        answer = _post(stack, _range(events))
        assert answer.status_code == 413 and "at most 100 " in answer.json()["detail"], answer.text
        stack.gateway.app.state.whatif_slot.held += 1  # as if a what-if were running
        try:
            busy = _post(stack, _range(events))
        finally:
            stack.gateway.app.state.whatif_slot.held -= 1
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "5" and "one at a time" in busy.text
        gateway.settings = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:9",
                                                       "gateway_whatif_read_timeout": 3.0})
        answer = _post(stack, _range(events))
        assert answer.status_code == 503 and "Kafka" in answer.json()["detail"], answer.text
    finally:
        gateway.settings = settings


def test_advise_publish_then_get_advice(recorded, capsys):
    stack, _ = recorded
    with stack.client("analyst") as analyst:
        none = analyst.get("/advice")
        assert none.status_code == 404 and "advise --publish" in none.json()["detail"]
        env = {**os.environ, **stack.settings.to_env(), "COLUMNS": "160"}
        done = subprocess.run([sys.executable, "-m", "ratewarden.cli", "advise", "--from-topics", "--tiers", "3",
                               "--publish"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "published 3 tiers'" in done.stdout
        answer = analyst.get("/advice", params={"users": 5})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["run"]["policy"] == {"max_throttled": 0.001, "window": 60.0, "algorithm": "fixed", "burst": None}
    assert got["run"]["tiers"] == len(got["tiers"]) == 3 and got["users_total"] == got["run"]["users"] > 5
    assert len(got["users"]) == 5 and all(u["tier"] in {t["name"] for t in got["tiers"]} for u in got["users"])
    assert all(t["throttled"] <= 0.001 * t["requests"] for t in got["tiers"])
    _show(capsys, "GET /advice?users=5", got)
