"""The pure pieces behind POST /whatif and GET /advice: candidates as the CLI and the body give them
(``whatif_limits``), the body's range and bounds, and the advice topic's records and their latest run."""

import msgspec
import pytest

from agents.advisor import Advice, Policy
from ratewarden.advise import AdviseRun, advice_records
from ratewarden.gateway.models_whatif import WhatIfBody
from ratewarden.gateway.routes.advice import latest_advice
from ratewarden.gateway.routes.whatif import _job
from ratewarden.whatif_limits import candidate_book, convert_limits, new_book, parse_default, parse_tier_set
from schemas.limits import RateLimit, TierLimit


def _book():
    book = new_book(parse_default("100/60"), [RateLimit(user_id="alice", limit=5, window=60),
                                              RateLimit(user_id="alice", limit=2, window=60, request_type="login")])
    book.put_tier("gold", TierLimit(tier="gold", limit=500, window=60))
    book.put_member("bob", "gold")
    return book


def test_a_tier_change_in_the_set_syntax():
    assert parse_tier_set("gold=20/60/gcra/5") == TierLimit(tier="gold", limit=20, window=60, algorithm="gcra", burst=5)
    assert parse_tier_set("gold:login=3/60").request_type == "login"
    with pytest.raises(ValueError, match="bad tier name"):
        parse_tier_set("-gold=20/60")
    with pytest.raises(ValueError, match="expected USER"):
        parse_tier_set("gold")


def test_a_candidate_replaces_own_limits_keeps_tiers_and_refuses_an_unknown_tier():
    book = candidate_book(_book(), [RateLimit(user_id="carol", limit=7, window=60)],
                          [RateLimit(user_id="dave", limit=1, window=60)], [TierLimit(tier="gold", limit=50, window=60)])
    assert book.get("alice") is None and book.rules_for("alice", "login")[0].limit == 100  # replaced: the default
    assert book.rules_for("carol", "read")[0].limit == 7 and book.rules_for("dave", "read")[0].limit == 1
    assert book.rules_for("bob", "read")[0].limit == 50  # the tier's candidate limit
    kept = candidate_book(_book())
    assert kept.rules_for("alice", "login")[1].limit == 2 and kept.rules_for("bob", "read")[0].limit == 500
    with pytest.raises(ValueError, match="unknown tier 'silver'.*tiers: gold"):
        candidate_book(_book(), tier_changes=[TierLimit(tier="silver", limit=5, window=60)])


def test_a_limits_document_names_its_bad_item():
    assert convert_limits([{"user_id": "a", "limit": 3}], ["limits[0]"]) == [RateLimit(user_id="a", limit=3)]
    with pytest.raises(ValueError, match=r"limits\[1\]: not a rate limit"):
        convert_limits([{"user_id": "a", "limit": 3}, {"user_id": "b", "limit": -1}], ["limits[0]", "limits[1]"])


@pytest.mark.parametrize("body, message", [
    ({"since": 100, "until": 100}, "until must be after since"),
    ({"since": 0, "until": 86_401}, "at most 86,400 s"),
    ({"since": "later", "until": 5}, "not a time"),
    ({"since": "1e400", "until": 5}, "not a time between"),
    ({"since": 0, "until": 60, "set": ["alice=5"]}, "expected USER"),
    ({"since": 0, "until": 60, "default": "5/60/leaky"}, "unknown algorithm 'leaky'"),
    ({"since": 0, "until": 60, "set_tier": ["gold=0/0"]}, ">= 0.001"),
])
def test_the_body_range_and_candidate_are_checked(body, message):
    with pytest.raises(ValueError, match=message):
        _job(WhatIfBody.model_validate(body), 86_400)


def test_the_body_as_the_cli_takes_it():
    body = WhatIfBody.model_validate({"since": "2024-11-29T17:06:40Z", "until": 1732900100.5, "set": ["alice:login=3/60"],
                                      "limits": [{"user_id": "carol", "limit": 7}], "default": "60/60"})
    job = _job(body, 86_400)
    assert (job.since, job.until) == (1_732_900_000.0, 1732900100.5) and job.candidate
    assert job.changes == [RateLimit(user_id="alice", limit=3, request_type="login")]
    assert job.limits == [RateLimit(user_id="carol", limit=7)]
    assert job.given == ["limits: 1 records", "set alice:login=3/60", "default 60/60"]
    assert not _job(WhatIfBody.model_validate({"since": 0, "until": 1}), 86_400).candidate


def _run(limit: int) -> AdviseRun:
    tiers = {"calm": Advice("calm", 2, limit, 100, 0, 10, 4)}
    users = {"u1": Advice("u1", 1, limit - 1, 60, 0), "u2": Advice("u2", 1, limit + 1, 40, 0)}
    return AdviseRun(tiers, users, {"u1": "calm", "u2": "calm"}, {}, [], (120, 100, 3))


def test_the_latest_advice_is_the_newest_run_and_its_records_only():
    policy = Policy(0.01, 60.0, "gcra", 5)
    old = advice_records(_run(30), policy, 1000.0) + [("user:u3", msgspec.json.encode(
        {"type": "limit", "kind": "user", "name": "u3", "made_at": 1000.0, "limit": 1, "window": 60, "algorithm": "fixed",
         "users": 1, "requests": 1, "throttled": 0}))]
    new = advice_records(_run(40), policy, 2000.0)
    assert [key for key, _ in new] == ["tier:calm", "user:u1", "user:u2", "run"]  # the run last
    values = list(enumerate([v for _, v in old + new] + [b"not json"]))
    run, current, skipped = latest_advice(values)
    assert run.made_at == 2000.0 and run.policy.burst == 5 and (run.recorded, run.honest, run.flagged_sources) == (120, 100, 3)
    assert [(a.kind, a.name, a.limit) for a in current] == [("tier", "calm", 40), ("user", "u1", 39), ("user", "u2", 41)]
    assert current[1].tier == "calm" and current[0].stopped == 4 and skipped == 1  # u3 of the old run: stale
    assert latest_advice([]) == (None, [], 0)
