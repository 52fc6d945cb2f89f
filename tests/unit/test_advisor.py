"""Limit advice: on simulated honest users of known rate profiles plus attacks, the advised limits meet the
policy when the what-if replays them independently, the learned tiers recover the profiles, flagged
traffic is left out, and ``ratewarden advise`` writes rules files that load back."""

import json
import shlex

import msgspec
import pandas as pd
import pytest

from agents.advisor import Policy, advise_groups, profile_users, split_flagged
from agents.advisor_tiers import confusion, kmeans, learn_tiers, purity
from agents.rules import LimitBook, limit_key
from agents.whatif import Flagged, Replayer
from ratewarden.cli import main as cli
from ratewarden.replay import write_decisions, write_trace
from ratewarden.sim_profiles import simulate_profiles
from ratewarden.tiers_cli import read_tier_records, tier_command
from ratewarden.whatif_inputs import read_limits_file
from schemas.limits import TierLimit, TierMembership
from streams.settings import get_settings

SHARE = 0.001
NEVER = 1_000_000_000


@pytest.fixture(scope="module")
def sim():
    return simulate_profiles(minutes=20, users=400, seed=11)


@pytest.fixture(scope="module")
def advised(sim, tmp_path_factory):
    """The simulated trace decided under a default of 100/60 (as recorded), its flags, and the CLI's outputs."""
    where = tmp_path_factory.mktemp("advise")
    write_trace(where / "trace.jsonl", sim.events)
    write_decisions(where / "decisions.jsonl", Replayer(LimitBook(100, 60.0), {}).decisions(sim.events))
    (where / "flags.jsonl").write_text("".join(json.dumps({"ip": ip}) + "\n" for ip in sim.labels["attackers"]))
    out = where / "out"
    get_settings.cache_clear()
    status = cli(["advise", "--trace", str(where / "trace.jsonl"), "--decisions", str(where / "decisions.jsonl"),
                  "--flags", str(where / "flags.jsonl"), "--default", "100/60", "--out", str(out)])
    get_settings.cache_clear()  # read again from the environment by the next test that patches it
    assert status == 0
    return out


def _honest(sim):
    return split_flagged(sim.events, Flagged(sim.labels["attackers"]))


def _tier_records(out) -> list:
    """advice_tiers.jsonl: the values of the topic's ``tier:`` and ``member:`` records."""
    lines = (out / "advice_tiers.jsonl").read_bytes().splitlines()
    return [msgspec.json.decode(line, type=TierMembership if b'"user_id"' in line else TierLimit) for line in lines]


def _throttles(events, book) -> dict[str, int]:
    verdicts, _ = Replayer(book, {}).decide(events)
    counts: dict[str, int] = {}
    for event, verdict in zip(events, verdicts):
        if verdict == "throttle":
            counts[event.user_id] = counts.get(event.user_id, 0) + 1
    return counts


def _tier_book(tier_limits, members) -> LimitBook:
    book = LimitBook(NEVER, 60.0)
    for limit in tier_limits:
        book.put_tier(limit_key(limit.tier), limit)
    for user, tier in members.items():
        book.put_member(user, tier)
    return book


def test_tier_limits_meet_the_policy_and_are_the_smallest(sim, advised):
    honest, _ = _honest(sim)
    records = _tier_records(advised)
    limits = [r for r in records if isinstance(r, TierLimit)]
    members = {r.user_id: r.tier for r in records if isinstance(r, TierMembership)}
    assert len(limits) >= 2 and len(members) == len(profile_users(honest))
    requests: dict[str, int] = {}
    for event in honest:
        requests[members[event.user_id]] = requests.get(members[event.user_id], 0) + 1
    throttled = _throttles(honest, _tier_book(limits, members))
    by_tier: dict[str, int] = {}
    for user, n in throttled.items():
        by_tier[members[user]] = by_tier.get(members[user], 0) + n
    for limit in limits:  # per tier, and one less would break the policy
        assert by_tier.get(limit.tier, 0) <= SHARE * requests[limit.tier], limit
        lower = [msgspec.structs.replace(x, limit=x.limit - 1) if x.tier == limit.tier else x for x in limits]
        less = sum(n for u, n in _throttles(honest, _tier_book(lower, members)).items() if members[u] == limit.tier)
        assert less > SHARE * requests[limit.tier], limit
    assert sum(by_tier.values()) <= SHARE * len(honest)  # overall
    tiers = pd.read_csv(advised / "advice_tiers.csv")
    assert dict(zip(tiers.tier, tiers.throttled)) == {x.tier: by_tier.get(x.tier, 0) for x in limits}


def test_user_limits_meet_the_policy(sim, advised):
    honest, _ = _honest(sim)
    book = LimitBook(NEVER, 60.0)
    own = read_limits_file(advised / "advice_user_limits.jsonl")
    for limit in own:
        book.put(limit_key(limit.user_id), limit)
    throttled = _throttles(honest, book)
    requests = {p.user: p.requests for p in profile_users(honest).values()}
    assert {x.user_id for x in own} == set(requests)
    assert all(throttled.get(user, 0) <= SHARE * n for user, n in requests.items())


def test_learned_tiers_recover_the_profiles(sim, advised, capsys):
    members = {r.user_id: r.tier for r in _tier_records(advised) if isinstance(r, TierMembership)}
    table = confusion(sim.labels["profiles"], members)
    shares = purity(table)
    with capsys.disabled():
        print("\nconfusion (profile x learned tier), purity", {t: round(x, 3) for t, x in shares.items()})
        print(pd.DataFrame(table).fillna(0).astype(int).reindex(["light", "regular", "heavy", "api"]).to_string())
    assert len(table) == 4
    assert all(share >= 0.9 for share in shares.values()), shares
    majority = [max(row, key=row.get) for row in table.values()]
    assert majority == ["light", "regular", "heavy", "api"]  # tier1 the lightest


def test_flagged_traffic_is_left_out(sim, advised):
    honest, abusive = _honest(sim)
    flagged = Flagged(sim.labels["attackers"])
    assert abusive and all(e.ip in flagged for e in abusive) and not any(e.ip in flagged for e in honest)
    users = pd.read_csv(advised / "advice_users.csv")
    assert not set(users.user) & {"acct-flood-1", "acct-crawler-0", "acct-rotator"}
    assert users.requests.sum() == len(honest)
    takeover = sim.labels["takeover"]  # an honest light user whose account is also used from a flagged IP
    row = users.set_index("user").loc[takeover]
    assert row.requests == sum(1 for e in honest if e.user_id == takeover)
    tiers = pd.read_csv(advised / "advice_tiers.csv").set_index("tier")
    takeover_tier = tiers.loc[row.tier]
    assert takeover_tier.abusive == sum(1 for e in abusive if e.user_id == takeover)
    assert takeover_tier.stopped > 0.8 * takeover_tier.abusive  # 120 a minute against a light tier


def test_rules_files_and_scripts(advised):
    for name in ("advice_tier_limits.jsonl", "advice_user_limits.jsonl"):
        limits = read_limits_file(advised / name)
        assert limits and all(x.window == 60 and x.algorithm == "fixed" for x in limits)
    tier_limits = {x.user_id: x.limit for x in read_limits_file(advised / "advice_tier_limits.jsonl")}
    users = pd.read_csv(advised / "advice_users.csv")
    assert tier_limits == dict(zip(users.user, users.tier_limit))
    script = (advised / "advice_apply.sh").read_text().splitlines()
    [command] = [line for line in script if line.startswith("ratewarden")]  # one import of the records file
    assert tier_command(shlex.split(command)[1:]).tier_action == "import" and "advice_tiers.jsonl" in command
    limits, members = read_tier_records(advised / "advice_tiers.jsonl")
    assert {m.user_id: m.tier for m in members} == dict(zip(users.user, users.tier))
    assert {x.tier: x.limit for x in limits} == dict(zip(users.tier, users.tier_limit))
    one_by_one = [line[2:] for line in script if line.startswith("# ratewarden")]  # spelled out, commented
    parsed = [tier_command(shlex.split(line)[1:]) for line in one_by_one]  # the tiers CLI's own parser accepts them
    assert {p.tier_action for p in parsed} == {"set", "assign"}
    assert sum(p.tier_action == "assign" for p in parsed) == len(users)
    for name in ("advice_users.parquet", "advice_tiers.parquet", "advice_tiers.png", "advice_users.sh"):
        assert (advised / name).stat().st_size > 0


def test_given_plans_and_gcra(sim):
    """Plans instead of learned tiers; a GCRA policy with a burst is met as well."""
    honest, _ = _honest(sim)
    plans = {u: p for u, p in sorted(sim.labels["profiles"].items()) if p in ("light", "api")}
    plans = {u: p for p in ("light", "api") for u in [u for u in plans if plans[u] == p][:15]}
    chosen = [e for e in honest if e.user_id in plans]
    policy = Policy(0.01, 60.0, "gcra", 5)
    advice = advise_groups(sim.events, plans, policy, Flagged(sim.labels["attackers"]))
    assert set(advice) == {"light", "api"} and advice["light"].limit < advice["api"].limit
    limits = [TierLimit(tier=a.group, limit=a.limit, window=60.0, algorithm="gcra", burst=5) for a in advice.values()]
    throttled = _throttles(chosen, _tier_book(limits, plans))
    for a in advice.values():
        got = sum(n for u, n in throttled.items() if plans[u] == a.group)
        assert got == a.throttled <= 0.01 * a.requests


def test_kmeans_is_deterministic_and_k_is_chosen():
    import numpy as np

    rng = np.random.default_rng(3)
    points = np.concatenate([rng.normal(c, 0.1, (30, 2)) for c in (0, 2, 4)])
    first, second = kmeans(points, 3, seed=1)[0], kmeans(points, 3, seed=1)[0]
    assert (first == second).all()
    assert len(set(learn_tiers(_fake_profiles(points), None).values())) == 3  # k by the silhouette


def _fake_profiles(points):
    import numpy as np

    from agents.advisor import UserProfile

    return {f"u{i:03d}": UserProfile(f"u{i:03d}", 1, 1, float(np.expm1(x)), float(np.expm1(y)), float(np.expm1(y)),
                                     1, 0.0) for i, (x, y) in enumerate(points)}
