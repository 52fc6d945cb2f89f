"""The gateway benchmark's vegeta pacer, its pure parts: the targets it is given and how its results are read."""

import base64
import json

from bench.gateway.target import OURS_NOT_DECIDED, Target
from bench.gateway.vegeta import parse_results, targets_file

OURS = Target("ours", 8080, "/requests", {"Authorization": "Bearer k"}, OURS_NOT_DECIDED)
NS = 1_000_000_000


def _row(seq: int, sent_ns: int, latency_ns: int, code: int = 200, body: bytes = b'{"status":"ok"}',
         error: str = "") -> str:
    """One line of ``vegeta encode --to=csv`` (timestamp, code, latency, bytes out/in, error, body, attack,
    seq, method, url, headers)."""
    return ",".join([str(sent_ns), str(code), str(latency_ns), "10", str(len(body)), f'"{error}"',
                     base64.b64encode(body).decode(), "", str(seq), "POST", "http://127.0.0.1:8080/requests", ""])


def test_targets_are_every_users_call_shuffled_with_the_keys_headers(tmp_path):
    path = targets_file(OURS, 50, 0, 7, tmp_path / "t.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 50
    assert {line["method"] for line in lines} == {"POST"}
    assert {line["url"] for line in lines} == {"http://127.0.0.1:8080/requests"}
    assert lines[0]["header"] == {"Content-Type": ["application/json"], "Authorization": ["Bearer k"]}
    bodies = [json.loads(base64.b64decode(line["body"])) for line in lines]
    assert sorted(b["user_id"] for b in bodies) == sorted(f"u{n}" for n in range(1, 51))
    assert [b["user_id"] for b in bodies] != [f"u{n}" for n in range(1, 51)]  # shuffled: users in turn, not in order
    assert targets_file(OURS, 50, 0, 7, tmp_path / "again.jsonl").read_text() == path.read_text()  # seeded


def test_batch_targets_carry_batch_bodies(tmp_path):
    batch = Target("ours", 8080, "/requests/batch", {}, OURS_NOT_DECIDED, batch=5)
    lines = targets_file(batch, 50, 5, 7, tmp_path / "b.jsonl").read_text().splitlines()
    body = json.loads(base64.b64decode(json.loads(lines[0])["body"]))
    assert len(lines) == 256 and len(body["requests"]) == 5


def test_latency_counts_from_the_due_time_and_warmup_calls_are_left_out():
    start, rate = 1_000 * NS, 100.0  # a call every 10 ms
    rows = [_row(seq, start + seq * NS // 100, 2_000_000) for seq in range(300)]
    rows[250] = _row(250, start + 250 * NS // 100 + 30_000_000, 2_000_000)  # sent 30 ms late
    rows[260] = _row(260, start + 260 * NS // 100, 1_000_000, code=429, body=b'{"status":"throttled"}')
    rows[270] = _row(270, start + 270 * NS // 100, 1_000_000, body=b'{"status":"ok","fail_open": true}')
    rows[280] = _row(280, start + 280 * NS // 100, 5_000_000_000, code=0, body=b"", error="timeout, retried")
    figures = parse_results("\n".join(rows) + "\n", rate, 1.0, OURS_NOT_DECIDED)
    assert figures["requests"] == 200  # the first second's 100 calls were the warm-up
    assert figures["p50_ms"] == 2.0
    assert figures["max_ms"] == 5_000.0
    assert figures["p99_ms"] == 32.0  # the late call: its 30 ms of lag count
    assert figures["send_lag_p99_ms"] == 0.0 and figures["errors"] == 1
    assert figures["decided_calls"] == 199 and figures["throttled_calls"] == 1 and figures["undecided"] == 1
    assert figures["source"] == "vegeta"


def test_the_schedule_starts_at_the_earliest_send_less_its_offset():
    rate = 10.0
    rows = [_row(seq, 5 * NS + seq * NS // 10 + 50_000_000, 1_000_000) for seq in range(20)]  # every send 50 ms late
    rows[0] = _row(0, 5 * NS, 1_000_000)  # but the first on time
    figures = parse_results("\n".join(rows), rate, 0.0, OURS_NOT_DECIDED)
    assert figures["requests"] == 20
    assert figures["p50_ms"] == 51.0 and round(figures["send_lag_p99_ms"]) == 50


def test_calls_vegeta_never_sent_are_errors():
    rate = 100.0  # 2 s measured after 1 s of warm-up: 200 calls due (seq 100..299), only 150 of them sent
    rows = [_row(seq, 7 * NS + seq * NS // 100, 1_000_000) for seq in range(250)]
    figures = parse_results("\n".join(rows), rate, 1.0, OURS_NOT_DECIDED, seconds=2.0)
    # the last call (seq 299), due at the very end, goes or not by microseconds: it is never counted missing
    assert figures["requests"] == 150 and figures["unsent"] == 49 and figures["errors"] == 49
    rows = [_row(seq, 7 * NS + seq * NS // 100, 1_000_000) for seq in range(299)]
    assert parse_results("\n".join(rows), rate, 1.0, OURS_NOT_DECIDED, seconds=2.0)["errors"] == 0


def test_no_results_is_an_error_not_a_zero_latency():
    figures = parse_results("", 100.0, 0.0, OURS_NOT_DECIDED)
    assert figures["errors"] == 1 and figures["requests"] == 0 and figures["p99_ms"] is None
    assert parse_results("", 100.0, 1.0, OURS_NOT_DECIDED, seconds=2.0)["errors"] == 200
