"""The rate limit service tooling's pure parts: ghz's JSON report (bench/rls_bench.py), the protoset, and
the differential harness's call sequence and comparison (bench/rls_differential.py)."""

import json

import pytest

from bench.rls_bench import GhzResult, Run, ghz_command, parse_ghz, summarize
from bench.rls_differential import RULES_YAML, SHAPES, calls, compare

MS = 1_000_000  # ghz reports durations in nanoseconds


def _report(statuses, errors=None, end="normal", count=1000, rps=5000.0):
    return json.dumps({
        "count": count, "rps": rps, "endReason": end, "total": 200 * MS,
        "latencyDistribution": [{"percentage": p, "latency": int(v * MS)}
                                for p, v in ((10, 0.5), (50, 1.25), (90, 3.0), (99, 7.5))],
        "statusCodeDistribution": statuses, "errorDistribution": errors or {}, "details": [],
    })


def test_a_clean_report_gives_rate_and_percentiles_in_ms():
    got = parse_ghz(_report({"OK": 1000}))
    assert got.count == 1000 and got.rps == pytest.approx(5000.0)
    assert got.p50_ms == pytest.approx(1.25) and got.p99_ms == pytest.approx(7.5)
    assert got.errors == 0 and got.cut == 0 and got.statuses == {"OK": 1000}


def test_calls_cut_by_the_end_of_a_timed_run_are_not_service_errors():
    text = _report({"OK": 990, "Unavailable": 9, "Canceled": 1}, {
        "rpc error: code = Unavailable desc = transport is closing": 9,
        "rpc error: code = Canceled desc = grpc: the client connection is closing": 1}, end="timeout")
    got = parse_ghz(text)
    assert got.cut == 10 and got.errors == 0


def test_real_errors_are_counted():
    text = _report({"OK": 990, "Unauthenticated": 10},
                   {"rpc error: code = Unauthenticated desc = no key": 10}, end="timeout")
    got = parse_ghz(text)
    assert got.errors == 10 and got.cut == 0


def test_a_report_without_percentiles_has_none():
    got = parse_ghz(json.dumps({"count": 0, "rps": 0}))
    assert (got.count, got.p50_ms, got.p99_ms, got.errors) == (0, None, None, 0)


def test_ghz_command_draws_users_by_template_and_sends_the_key():
    command = ghz_command("ghz", "p.protoset", "127.0.0.1:9", 32, 1000, duration="5s", key="secret")
    data = json.loads(command[command.index("-d") + 1])
    assert data["descriptors"][0]["entries"][0] == {"key": "user", "value": "u{{randomInt 1 1001}}"}
    assert json.loads(command[command.index("-m") + 1]) == {"authorization": "Bearer secret"}
    assert command[command.index("-z") + 1] == "5s" and command[-1] == "127.0.0.1:9"
    assert "-n" in ghz_command("ghz", "p", "t", 4, 10, total=200) and "-m" not in ghz_command("ghz", "p", "t", 4, 10)


def test_summary_has_medians_and_the_ratio():
    def run(round_no, system, rps):
        return Run(round_no, system, GhzResult(1000, rps, 1.0, 2.0 * round_no + 2, 0, {"OK": 1000}), 0.1, 50.0)

    rows = summarize([run(0, "ours", 1000.0), run(0, "peer", 4000.0), run(1, "ours", 3000.0), run(1, "peer", 4000.0)])
    assert [r[0] for r in rows] == ["ours", "peer"]
    assert rows[0][1] == "2,000 (1,000–3,000)" and rows[0][2] == "0.50×" and rows[1][2] == "–"


def test_protoset_holds_the_service_and_its_imports_first():
    from bench.peers.rls_protoset import file_descriptor_set

    names = [f.name for f in file_descriptor_set().file]
    assert names[-1] == "envoy/service/ratelimit/v3/rls.proto"
    assert names.index("envoy/extensions/common/ratelimit/v3/ratelimit.proto") < len(names) - 1
    assert len(names) == len(set(names))


def test_calls_are_deterministic_and_depend_on_the_seed():
    assert calls(200, 3) == calls(200, 3)
    assert calls(200, 3) != calls(200, 4)
    assert calls(50, 3) == calls(200, 3)[:50]


def test_calls_touch_every_shape_and_vary_hits():
    sequence = calls(200, 1)
    descriptors = [tuple(d) for c, _ in sequence for d in c]
    for shape in SHAPES.values():
        drawn = shape(__import__("random").Random(0))
        assert any(d[0] == tuple(drawn)[0] and len(d) == len(drawn) for d in descriptors)
    assert all(1 <= len(c) <= 3 for c, _ in sequence)
    assert any(h > 1 for _, h in sequence)
    keys = {k for c, _ in sequence for d in c for k, _ in d}
    assert {"plan", "plan_override", "nomatch", "internal", "shadow"} <= keys
    assert any({d[0][0] for d in c} >= {"plan", "plan_override"} for c, _ in sequence)  # the replacement


def test_rules_cover_the_shapes():
    import yaml

    rules = yaml.safe_load(RULES_YAML)
    flat = rules["descriptors"]
    assert rules["domain"] == "diff"
    assert any(d.get("descriptors") for d in flat)
    assert any(d.get("rate_limit", {}).get("unlimited") for d in flat)
    assert any(d.get("shadow_mode") for d in flat)
    assert any(d.get("rate_limit", {}).get("replaces") for d in flat)
    assert {d["key"] for d in flat if d["key"] == "user" and "value" not in d} == {"user"}
    assert any(d["key"] == "user" and d.get("value") == "vip" for d in flat)


def test_compare_names_the_call_and_both_answers():
    sequence = calls(3, 1)
    a = [("OK", [("OK", 4)]), ("OK", [("OK", 0)]), ("OVER_LIMIT", [("OVER_LIMIT", 0)])]
    b = [("OK", [("OK", 4)]), ("OK", [("OK", 1)]), ("OVER_LIMIT", [("OVER_LIMIT", 0)])]
    assert compare(a, a) == []
    lines = compare(a, b, sequence, ("peer", "ours"))
    assert len(lines) == 1 and lines[0].startswith("call 1 ")
    assert "route" in lines[0] and "peer OK [('OK', 0)]" in lines[0] and "ours OK [('OK', 1)]" in lines[0]
    assert "answered 3 calls" in compare(a, b[:2])[0]
