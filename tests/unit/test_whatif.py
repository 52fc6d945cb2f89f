"""The what-if core and its inputs: the limiter's own loop as the oracle, candidates, recorded blocks, the diff."""

import asyncio
import json
import random

import msgspec
import pandas as pd
import pytest

from agents.blocklist_entries import Blocklist
from agents.limiter import Limiter
from agents.rules import LimitBook, limit_key
from agents.state_codec import STATE_CODEC
from agents.whatif import Flagged, Replayer, diff
from ratewarden.cli import main as cli
from ratewarden.replay import write_trace
from ratewarden.whatif_inputs import parse_default, parse_set, read_limits_file
from schemas.events import RequestEvent
from schemas.limits import BlocklistEntry, RateLimit, TierLimit
from streams.settings import Settings, get_settings
from streams.state import MemoryPartitionStore
from tests.unit.test_limiter_loop import CollectingSender, Record

T0 = 1_732_900_000.0
LIMITS = [
    RateLimit(user_id="fixed", limit=5, window=10),
    RateLimit(user_id="slide", limit=5, window=10, algorithm="sliding"),
    RateLimit(user_id="cell", limit=5, window=10, algorithm="gcra", burst=2),
    RateLimit(user_id="typed", limit=8, window=10),
    RateLimit(user_id="typed", request_type="login", limit=2, window=10),
    RateLimit(user_id="quiet", limit=2, window=10, shadow=True),
]
USERS = ["fixed", "slide", "cell", "typed", "quiet", "other", "banned-user", "gold-1", "gold-2"]


def book(limits=LIMITS, default=(4, 10.0, "fixed"), tiers: bool = True) -> LimitBook:
    limits_book = LimitBook(*default)
    for limit in limits:
        limits_book.put(limit_key(limit.user_id, limit.request_type), limit)
    if tiers:  # a tier with a sliding limit and a typed one; gold-2 also has a limit of its own
        limits_book.put_tier("gold", TierLimit(tier="gold", limit=6, window=10, algorithm="sliding"))
        limits_book.put_tier(limit_key("gold", "login"), TierLimit(tier="gold", limit=1, window=10, request_type="login"))
        for user in ("gold-1", "gold-2"):
            limits_book.put_member(user, "gold")
        limits_book.put("gold-2", RateLimit(user_id="gold-2", limit=3, window=10, algorithm="gcra"))
    return limits_book


def trace(n: int = 3_000, seed: int = 3) -> list[RequestEvent]:
    rng = random.Random(seed)
    ts, events = T0, []
    for i in range(n):
        ts += rng.expovariate(12.0)
        user = rng.choice(USERS)
        ip = "198.51.100.9" if rng.random() < 0.1 else f"203.0.113.{rng.randrange(1, 30)}"
        events.append(RequestEvent(f"r{i}", user, ip, rng.choice(("read", "login")), round(ts, 3)))
    return events


def limiter_decisions(events: list[RequestEvent], limits: LimitBook, blocklist: Blocklist, tmp_path,
                      headers: dict[str, list] = {}) -> list[dict]:
    """What the real hot loop (``Limiter.process``) decides for ``events``, in one partition; ``headers``: the
    record headers of some, by request_id."""
    settings = Settings(var_dir=tmp_path, kafka_bootstrap_servers="unused:9092")
    limiter = Limiter(settings, limits, blocklist, clock=lambda: events[-1].ts + 1)
    sender = CollectingSender()
    limiter.outputs.sender = lambda partition: sender
    limiter.stores[0] = MemoryPartitionStore(0, STATE_CODEC)
    encode = msgspec.json.encode
    records = [Record(e.user_id.encode(), encode(e), i, "requests", 0, headers.get(e.request_id, ()))
               for i, e in enumerate(events)]
    for start in range(0, len(records), 500):
        asyncio.run(limiter.process(0, records[start:start + 500]))
    limiter.stores[0].close()
    return [msgspec.json.decode(v) for _, v in sender.by_topic[settings.decisions_topic]]


def blocklist() -> Blocklist:
    bans = Blocklist()
    bans.put("ip", "198.51.100.9", BlocklistEntry("198.51.100.9", start=T0 + 60, ttl=60))
    bans.put("network", "203.0.113.0/28", BlocklistEntry("203.0.113.0/28", kind="network", start=T0 + 150, ttl=40))
    bans.put("user", "banned-user", BlocklistEntry("banned-user", kind="user", start=T0 + 100))
    return bans


def test_every_verdict_and_reason_of_the_limiter_comes_out_again(tmp_path):
    events = trace()
    recorded = limiter_decisions(events, book(), blocklist(), tmp_path)
    assert {d["reason"] for d in recorded} >= {"within_limit", "rate_limited", "rate_limited_type", "ip_blocked",
                                                "network_blocked", "user_blocked", "shadow:rate_limited",
                                                "rate_limited_tier", "rate_limited_tier_type"}
    blocks = {d["request_id"]: d["reason"] for d in recorded if d["verdict"] == "block"}
    replayer = Replayer(book(), blocks)
    verdicts, reasons = [], []
    for start in range(0, len(events), 700):  # state carries over between calls
        got = replayer.decide(events[start:start + 700])
        verdicts += got[0]
        reasons += got[1]
    assert list(zip(verdicts, reasons)) == [(d["verdict"], d["reason"]) for d in recorded]
    result = diff(([d["verdict"] for d in recorded], [d["reason"] for d in recorded]), (verdicts, reasons),
                  [e.user_id for e in events], [e.ip for e in events])
    assert result.reproduced == result.total == len(events) and not result.changed


def test_a_candidate_gives_what_the_limiter_would_have_given_with_the_same_bans(tmp_path):
    """The candidate's replay equals the limiter run under the candidate, bans taken from the first run."""
    events = trace(seed=5)
    recorded = limiter_decisions(events, book(), blocklist(), tmp_path)
    blocks = {d["request_id"]: d["reason"] for d in recorded if d["verdict"] == "block"}
    candidate = book([*LIMITS[1:], RateLimit(user_id="fixed", limit=2, window=10, algorithm="gcra")], (3, 5.0, "sliding"))
    verdicts, reasons = Replayer(candidate, blocks).decide(events)
    again = limiter_decisions(events, candidate, blocklist(), tmp_path / "again")
    assert list(zip(verdicts, reasons)) == [(d["verdict"], d["reason"]) for d in again]


def test_a_lower_fixed_limit_throttles_what_an_oracle_counts():
    events = [RequestEvent(f"r{i}", "alice", "203.0.113.7", "read", T0 + i * 0.5) for i in range(200)]
    verdicts, _ = Replayer(book([RateLimit(user_id="alice", limit=7, window=10)], tiers=False), {}).decide(events)
    per_window: dict[int, int] = {}
    expected = []
    for e in events:  # the oracle: at most 7 allowed per epoch-aligned 10 s window
        window = int(e.ts // 10)
        expected.append("allow" if per_window.get(window, 0) < 7 else "throttle")
        per_window[window] = per_window.get(window, 0) + (expected[-1] == "allow")
    assert verdicts == expected


def test_recorded_blocks_stay_blocked_and_do_not_count():
    events = [RequestEvent(f"r{i}", "bob", "203.0.113.7", "read", T0 + i) for i in range(6)]
    verdicts, reasons = Replayer(book([], (3, 60.0, "fixed"), tiers=False), {"r0": "ip_blocked", "r1": "user_blocked"}).decide(events)
    assert list(zip(verdicts, reasons)) == [("block", "ip_blocked"), ("block", "user_blocked")] + [
        ("allow", "within_limit")] * 3 + [("throttle", "rate_limited")]


def test_the_diff_counts_transitions_users_hurt_and_changes_from_flagged_addresses_and_networks():
    old = (["allow", "allow", "throttle", "allow", "block", "allow"],
           ["within_limit", "within_limit", "rate_limited", "within_limit", "ip_blocked", "within_limit"])
    new = (["throttle", "throttle", "allow", "allow", "block", "allow"],
           ["rate_limited", "rate_limited", "within_limit", "shadow:rate_limited", "ip_blocked", "within_limit"])
    users = ["a", "b", "b", "c", "d", "b"]
    ips = ["198.51.100.1", "2001:db8:1:2::9", "203.0.113.5", "198.51.100.1", "198.51.100.1", "203.0.113.5"]
    result = diff(old, new, users, ips, Flagged(["198.51.100.1", "2001:db8:1:2::/64"]))
    assert result.transitions == {"allow->throttle": 2, "throttle->allow": 1, "allow->allow": 2, "block->block": 1}
    assert result.changed == [0, 1, 2, 3] and result.reproduced == 2
    assert result.by_user["b"] == {"allow->throttle": 1, "throttle->allow": 1}
    assert result.from_flagged == 3  # r0 and r3 from the address, r1 from inside the /64
    flagged = Flagged(["198.51.100.1", "2001:db8:1:2::/64"])
    assert [flagged.subject_of(ip) for ip in ips[:3]] == ["198.51.100.1", "2001:db8:1:2::/64", None]
    assert result.hurt == [("a", 1), ("b", 1)]


@pytest.mark.parametrize("spec, message", [
    ("alice", "expected USER[:TYPE]=LIMIT/WINDOW"),
    ("=5/60", "expected USER[:TYPE]=LIMIT/WINDOW"),
    ("alice=5", "expected USER[:TYPE]=LIMIT/WINDOW"),
    ("alice=5/60/leaky", "unknown algorithm 'leaky'"),
    ("alice=five/60", "Expected `int`"),
    ("alice=5/0", ">= 0.001"),
    ("alice=-1/60", ">= 0"),
    ("alice=5/60/gcra/2/9", "expected USER[:TYPE]=LIMIT/WINDOW"),
])
def test_bad_set_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_set(spec)


def test_set_and_default_specs():
    assert parse_set("alice=5/60") == RateLimit(user_id="alice", limit=5, window=60)
    assert parse_set("org:alice:login=2/1.5/gcra/3") == RateLimit(
        user_id="org:alice", request_type="login", limit=2, window=1.5, algorithm="gcra", burst=3)
    assert parse_default("50/30/sliding") == RateLimit(user_id="*", limit=50, window=30, algorithm="sliding")
    with pytest.raises(ValueError, match="LIMIT/WINDOW"):
        parse_default("50")


def test_limits_files_as_array_or_lines_and_their_errors(tmp_path):
    limits = [msgspec.to_builtins(x) for x in LIMITS[:2]]
    (tmp_path / "a.json").write_text(json.dumps(limits))
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps(x) for x in limits) + "\n\n")
    assert read_limits_file(tmp_path / "a.json") == read_limits_file(tmp_path / "l.jsonl") == LIMITS[:2]
    (tmp_path / "bad.jsonl").write_text(json.dumps(limits[0]) + "\n" + json.dumps({"user_id": "x", "limit": -3}))
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a rate limit: Expected `int` >= 0"):
        read_limits_file(tmp_path / "bad.jsonl")


def test_the_command_reproduces_a_run_and_says_which_line_is_bad(tmp_path, capsys, request):
    request.addfinalizer(get_settings.cache_clear)  # the next test reads its own environment
    events = trace(600)
    recorded = limiter_decisions(events, book(tiers=False), blocklist(), tmp_path)  # files carry no tiers
    write_trace(tmp_path / "t.jsonl", events)
    (tmp_path / "d.jsonl").write_bytes(b"".join(msgspec.json.encode(d) + b"\n" for d in recorded))
    (tmp_path / "limits.jsonl").write_bytes(b"".join(msgspec.json.encode(x) + b"\n" for x in LIMITS))
    base = ["whatif", "--trace", str(tmp_path / "t.jsonl"), "--decisions", str(tmp_path / "d.jsonl")]
    env = {"RATEWARDEN_DEFAULT_LIMIT": "4", "RATEWARDEN_DEFAULT_WINDOW": "10"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        get_settings.cache_clear()  # read the patched environment, whatever an earlier test cached
        assert cli([*base, "--in-force", str(tmp_path / "limits.jsonl")]) == 0
        assert "600 of 600 verdicts reproduced" in capsys.readouterr().out
        (tmp_path / "fewer.json").write_text(json.dumps([msgspec.to_builtins(x) for x in LIMITS[:3]]))
        fewer = tmp_path / "fewer"
        assert cli([*base, "--in-force", str(tmp_path / "limits.jsonl"), "--limits", str(tmp_path / "fewer.json"),
                    "--out", str(fewer)]) == 0
        assert "candidate:" in capsys.readouterr().out
        # Only the users whose limits the candidate left out (typed, quiet: now on the default) change.
        assert set(pd.read_csv(fewer / "changed.csv")["user_id"]) == {"typed", "quiet"}
        out = tmp_path / "out"
        assert cli([*base, "--in-force", str(tmp_path / "limits.jsonl"), "--set", "other=1/10", "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "candidate:" in printed and "allow->throttle" in printed
        for name in ("users", "minutes", "changed"):
            assert (out / f"{name}.csv").exists() and (out / f"{name}.parquet").exists()
        assert (out / "throttled_per_minute.png").read_bytes()[:4] == b"\x89PNG"
        (tmp_path / "d.jsonl").write_bytes((tmp_path / "d.jsonl").read_bytes() + b'{"request_id": 1}\n')
        assert cli([*base, "--in-force", str(tmp_path / "limits.jsonl")]) == 2
        assert f"d.jsonl:{len(recorded) + 1}: not a decision" in capsys.readouterr().out
        assert cli([*base, "--set", "other=1"]) == 2


def test_an_event_the_limiter_dead_letters_has_no_decision_and_counts_nothing():
    limits = book([], tiers=False)
    # Constructed without validation, as a record from an older producer could be: a 5e-324 s window.
    limits.put("broken", RateLimit(user_id="broken", limit=5, window=5e-324))
    events = [RequestEvent("r0", "broken", "203.0.113.7", "read", T0), RequestEvent("r1", "ok", "203.0.113.7", "read", T0)]
    assert Replayer(limits, {}).decide(events) == (["none", "allow"], ["decision_error", "within_limit"])


def test_events_without_a_recorded_decision_are_left_out(tmp_path):
    from ratewarden.whatif_inputs import from_files

    events = trace(50)
    write_trace(tmp_path / "t.jsonl", events)
    decided = [{"request_id": e.request_id, "verdict": "allow", "reason": "within_limit"} for e in events[::2]]
    decided[3].update(verdict="block", reason="network_blocked")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in decided))
    (tmp_path / "f.jsonl").write_text(json.dumps({"ip": "2001:db8::/64", "allowlisted": False}) + "\n"
                                      + json.dumps({"ip": "192.0.2.1", "allowlisted": True}) + "\n")
    recorded = from_files(tmp_path / "t.jsonl", tmp_path / "d.jsonl", tmp_path / "f.jsonl")
    assert [e.request_id for e in recorded.events] == [e.request_id for e in events[::2]]
    assert recorded.unrecorded == 25 and recorded.blocks == {events[6].request_id: "network_blocked"}
    assert recorded.flagged == ["2001:db8::/64"]  # allow-listed flags are reported, never acted on


def test_recorded_address_refusals_are_inputs_of_the_replay_and_count_nothing(tmp_path):
    from collections import Counter

    from agents.whatif import BLOCK_REASONS, INPUT_REASONS
    from schemas.refusals import AddressRefusal, refusal_header

    events = trace(1_500)
    stamp = [refusal_header(AddressRefusal("remote_address", 3, 60.0, 4, 9.0))]
    refused = {e.request_id: stamp for e in events[::5]}
    recorded = limiter_decisions(events, book(), blocklist(), tmp_path, refused)
    reasons_of_refused = Counter(d["reason"] for d in recorded if d["request_id"] in refused)
    assert set(reasons_of_refused) <= {"rate_limited_address", *BLOCK_REASONS}  # a ban comes first
    assert reasons_of_refused["rate_limited_address"] > 250
    inputs = {d["request_id"]: d["reason"] for d in recorded if d["reason"] in INPUT_REASONS}
    verdicts, reasons = Replayer(book(), inputs).decide(events)
    assert list(zip(verdicts, reasons)) == [(d["verdict"], d["reason"]) for d in recorded]
    # without them as inputs the refused requests would be decided (and counted) by the user limits
    assert Replayer(book(), {k: v for k, v in inputs.items() if v != "rate_limited_address"}).decide(events) != (
        verdicts, reasons)


def test_a_candidate_rules_file_for_the_stream_is_replayed(tmp_path, capsys, request):
    request.addfinalizer(get_settings.cache_clear)
    events = trace(600)
    recorded = limiter_decisions(events, book(tiers=False), blocklist(), tmp_path)
    write_trace(tmp_path / "t.jsonl", events)
    (tmp_path / "d.jsonl").write_bytes(b"".join(msgspec.json.encode(d) + b"\n" for d in recorded))
    (tmp_path / "limits.jsonl").write_bytes(b"".join(msgspec.json.encode(x) + b"\n" for x in LIMITS))
    rules, other = tmp_path / "rules.yaml", tmp_path / "other.yaml"
    rules.write_text("domain: ratewarden\ndescriptors:\n  - key: user_id\n    value: other\n"
                     "    rate_limit: {unit: second, requests_per_unit: 0}\n")
    other.write_text("domain: edge\ndescriptors:\n  - key: route\n    rate_limit: {unit: second, requests_per_unit: 1}\n")
    base = ["whatif", "--trace", str(tmp_path / "t.jsonl"), "--decisions", str(tmp_path / "d.jsonl"),
            "--in-force", str(tmp_path / "limits.jsonl")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RATEWARDEN_DEFAULT_LIMIT", "4")
        patch.setenv("RATEWARDEN_DEFAULT_WINDOW", "10")
        get_settings.cache_clear()
        out = tmp_path / "out"
        assert cli([*base, "--rules", str(rules), "--out", str(out)]) == 0
        assert "candidate:" in capsys.readouterr().out
        assert set(pd.read_csv(out / "changed.csv")["user_id"]) == {"other"}  # refused whole: 0 a second
        assert cli([*base, "--rules", str(other)]) == 2
        assert "no rules for the ratewarden domain" in capsys.readouterr().out
