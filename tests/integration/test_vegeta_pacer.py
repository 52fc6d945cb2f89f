"""The gateway benchmark's vegeta pacer against a real HTTP server: the pinned vegeta's results are read as
the benchmark reads them (its CSV columns, due times, statuses, bodies). No Kafka.

vegeta is built by ``go install`` into ``~/.cache/ratewarden/go`` on the first run, then reused
(bench/peers/go_tools.py).
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.gateway.target import OURS_NOT_DECIDED, Target
from bench.gateway.vegeta import vegeta_load


class _Answers(BaseHTTPRequestHandler):
    """200 for every user but u3 (429, throttled) and u4 (200, but fail-open: no decision); keeps each call's
    Authorization field and body."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms wait for a delayed ACK
    seen: list[tuple[str | None, bytes]] = []

    def do_POST(self):  # noqa: N802 - the handler's hook
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.headers.get("Authorization"), body))
        code, answer = 200, b'{"status":"ok","fail_open":false}'
        if b'"u3"' in body:
            code, answer = 429, b'{"status":"throttled"}'
        elif b'"u4"' in body:
            answer = b'{"status":"ok","fail_open":true}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_paced_run_counts_every_call_after_the_warmup(server, tmp_path):
    _Answers.seen = []
    target = Target("ours", server.server_address[1], "/requests", {"Authorization": "Bearer k"}, OURS_NOT_DECIDED)
    figures = vegeta_load(target, users=5, batch=0, connections=4, seconds=2.0, warmup=0.5, rate=100, seed=7,
                          tmp=tmp_path)
    # 2.5 s at 100/s; the last call, due at the very end, goes or not by microseconds
    assert len(_Answers.seen) in (249, 250)
    assert all(key == "Bearer k" and b'"user_id":"u' in body for key, body in _Answers.seen)
    assert figures["requests"] in (199, 200) and figures["errors"] == figures["unsent"] == 0
    assert figures["offered"] == 100 and figures["decided_calls"] == figures["requests"]
    # five users in turn: u3 is throttled (a decision), u4 answered fail-open (no decision)
    assert figures["throttled_calls"] in (39, 40) and figures["undecided"] in (39, 40)
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["send_lag_p99_ms"] is not None and figures["send_lag_p99_ms"] >= 0
