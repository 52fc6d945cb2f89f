"""The gateway benchmark's pure parts (bench/gateway/): wrk output parsing, the generated Lua script, the own
client's bodies and tally, summaries."""

import json

import pytest

from bench.gateway.measure import Run
from bench.gateway.own_client import Tally
from bench.gateway.report import summarize
from bench.gateway.target import OURS_NOT_DECIDED, Target
from bench.gateway.wrk import parse_wrk, wrk_script

WRK_TEXT = """Running 5s test @ http://127.0.0.1:8080/json
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms    1.80ms  45.31ms   91.02%
    Req/Sec    12.81k     1.02k   14.20k    70.00%
  Latency Distribution
     50%  190.00us
     75%    2.60ms
     90%    3.90ms
     99%    1.61ms
  63804 requests in 5.01s, 12.47MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 10
Requests/sec:  12735.33
Transfer/sec:      2.49MB
"""


def test_text_output_is_parsed_and_errors_are_not_throughput():
    got = parse_wrk(WRK_TEXT)
    assert got["requests"] == 63804
    assert got["seconds"] == pytest.approx(5.01)
    assert got["p50_ms"] == pytest.approx(0.19)
    assert got["p99_ms"] == pytest.approx(1.61)
    assert got["decided_calls"] == 63804 - 10
    assert got["errors"] == 10 + 2 + 3
    assert got["source"] == "text"


def test_the_scripts_json_line_wins_and_429_is_a_decision():
    raw = {"requests": 1000, "duration_us": 2_000_000, "bytes": 1, "ok2xx": 900, "s429": 80, "other_status": 20,
           "undecided": 5, "connect_errors": 0, "read_errors": 1, "write_errors": 0, "status_errors": 100,
           "timeouts": 2, "p50_us": 250.5, "p90_us": 900.0, "p99_us": 4000.0, "p999_us": 9000.0, "max_us": 12000.0,
           "mean_us": 400.0}
    got = parse_wrk(WRK_TEXT + "WRKJSON " + json.dumps(raw) + "\n")
    assert got["source"] == "lua"
    assert got["decided_calls"] == 980
    assert got["undecided"] == 5
    assert got["throttled_calls"] == 80
    assert got["errors"] == 20 + 1 + 2
    assert got["p50_ms"] == pytest.approx(0.2505)
    assert got["p99_ms"] == pytest.approx(4.0)
    assert got["seconds"] == pytest.approx(2.0)


def test_no_summary_is_an_error():
    with pytest.raises(ValueError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_scripts_name_the_endpoints_and_bodies():
    ours = Target("ours", 1, "/requests", {"Authorization": "Bearer k"}, OURS_NOT_DECIDED)
    script = wrk_script(ours, 1000)
    assert '["Authorization"] = "Bearer k"' in script and 'local path = "/requests"' in script
    assert '"request_type":"bench","user_id":"u\' .. n .. \'","ip":"192.0.2.10"' in script
    assert "function done(" in script and "WRKJSON" in script and "function response(" in script
    batch = wrk_script(Target("ours", 1, "/requests/batch", {}, OURS_NOT_DECIDED, batch=500), 1000, 500)
    assert 'local users, batch, pool_size, seed = 1000, 500,' in batch and '{\\"requests\\":[' in batch
    peer = wrk_script(Target("peer", 1, "/json", {}), 1000)
    assert '{\\"domain\\":\\"rw\\",\\"descriptors\\":[' in peer and '"value":"u\' .. n .. \'"' in peer


def test_bodies_of_the_own_client():
    assert json.loads(Target("ours", 1, "/requests", {}).body(["u3"])) == {
        "request_type": "bench", "user_id": "u3", "ip": "192.0.2.10"}
    assert json.loads(Target("peer", 1, "/json", {}).body(["u3"])) == {
        "domain": "rw", "descriptors": [{"entries": [{"key": "user", "value": "u3"}]}]}
    batch = json.loads(Target("ours", 1, "/requests/batch", {}, batch=2).body(["u1", "u2"]))
    assert [item["user_id"] for item in batch["requests"]] == ["u1", "u2"]
    assert len(json.loads(Target("peer", 1, "/json", {}, batch=2).body(["u1", "u2"]))["descriptors"]) == 2


def test_tally_counts_fail_open_answers_as_undecided():
    tally = Tally(OURS_NOT_DECIDED)
    tally.add(200, b'{"status":"ok","fail_open": true}', 0.001)
    tally.add(200, b'{"status":"ok","fail_open":false}', 0.001)
    tally.add(429, b'{"status":"throttled"}', 0.001)
    tally.add(503, b'{"status":"unavailable"}', 0.001)
    assert (tally.decided_calls, tally.undecided, tally.throttled, tally.errors) == (3, 1, 1, 1)


def test_summary_medians_spread_and_ratio():
    runs = [Run(r, s, "wrk", 32, rate, 1.0, 2.0, 0, 0, 0, 0.1) for r, s, rate in
            [(0, "ours", 1000), (1, "ours", 3000), (2, "ours", 2000), (0, "peer", 4000), (1, "peer", 4000)]]
    rows = summarize(runs)
    ours = next(row for row in rows if row[2] == "ours")
    assert ours[3] == "2,000 (1,000–3,000)" and ours[4] == "0.50×" and ours[-1] == "3"
