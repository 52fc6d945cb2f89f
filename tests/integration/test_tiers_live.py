"""Tiers of limits on the real broker: a running worker picks up tier limits and memberships live."""

import msgspec
import pytest

from ratewarden.control import assign_tier, delete_limit, import_tiers, set_limit, set_tier_limits
from ratewarden.tiers_cli import read_tier_records
from schemas.limits import RateLimit, TierLimit, TierMembership
from tests.support.probe import Probe, verdicts

pytestmark = pytest.mark.kafka


def test_tier_limits_and_memberships_apply_live_without_a_restart(make_core_pipeline, tmp_path):
    pipeline = make_core_pipeline(default_limit=100)
    settings = pipeline.settings
    worker = pipeline.start_worker()
    probe = Probe(pipeline)
    assert {d.limit for d in probe.burst("alice", 3) + probe.burst("bob", 3)} == {100}

    # a tier set and a user assigned while the worker runs: that user's next requests follow the tier
    set_tier_limits([TierLimit(tier="gold", limit=3, window=60.0),
                     TierLimit(tier="gold", limit=1, window=60.0, request_type="login")], settings)
    assign_tier("alice", "gold", settings)
    probe.until("alice", 3)
    allowed, throttled = ("allow", "within_limit"), ("throttle", "rate_limited_tier")
    assert verdicts(probe.burst("alice", 5)) == [allowed] * 3 + [throttled] * 2
    assert verdicts(probe.burst("alice", 2, "login")) == [allowed, ("throttle", "rate_limited_tier_type")]
    assert [d.verdict for d in probe.burst("bob", 5)] == ["allow"] * 5 and probe.burst("bob", 1)[0].limit == 100

    # changing the tier's limit changes the decisions of its members, live
    set_tier_limits([TierLimit(tier="gold", limit=5, window=60.0)], settings)
    probe.until("alice", 5)
    assert verdicts(probe.burst("alice", 7)) == [allowed] * 5 + [throttled] * 2

    # a user's own limit wins over its tier's; removing it brings the tier back
    set_limit(RateLimit(user_id="alice", limit=2, window=60.0), settings)
    probe.until("alice", 2)
    assert verdicts(probe.burst("alice", 3)) == [allowed] * 2 + [("throttle", "rate_limited")]
    delete_limit("alice", settings=settings)
    probe.until("alice", 5)

    # unassigned: back to the default
    assign_tier("alice", None, settings)
    probe.until("alice", 100)
    assert [d.verdict for d in probe.burst("alice", 7)] == ["allow"] * 7

    # a file of tier records (as `ratewarden advise` writes it) imported in one send: limits, then members
    records = [TierLimit(tier="silver", limit=4, window=60.0), TierMembership(user_id="carol", tier="silver"),
               TierMembership(user_id="alice", tier="silver")]
    (tmp_path / "advice_tiers.jsonl").write_bytes(b"".join(msgspec.json.encode(x) + b"\n" for x in records))
    import_tiers(*read_tier_records(tmp_path / "advice_tiers.jsonl"), settings)
    probe.until("carol", 4)
    assert verdicts(probe.burst("alice", 5)) == [allowed] * 4 + [throttled]
    assert worker.poll() is None
