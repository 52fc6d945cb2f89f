"""The peer tooling against the real reference: envoyproxy/ratelimit + Redis with the differential rules,
its own ``client_cmd`` over gRPC, and a short ``ghz`` run with our protoset. No Kafka.

The Go programs are built by ``go install`` into ``~/.cache/ratewarden/go`` on the first run (minutes),
then reused (bench/peers/go_tools.py); Redis comes from Debian's package when missing.
"""

import json
import subprocess
from pathlib import Path

import pytest

from bench.peers.envoy_ratelimit import EnvoyRateLimit, build, build_client, build_ghz, ensure_packages
from bench.peers.rls_protoset import CALL, write_protoset
from bench.rls_differential import DOMAIN, RULES_YAML, calls, run


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    ensure_packages(print, ("redis-server",))
    service = EnvoyRateLimit(build(), tmp_path_factory.mktemp("envoy-ratelimit"), rules=RULES_YAML)
    service.start()
    try:
        yield service
    finally:
        service.stop()  # Redis and the service, by PID (_stop: SIGTERM, SIGKILL after a timeout)


def _client(peer: EnvoyRateLimit, descriptor: str) -> str:
    done = subprocess.run([str(build_client()), "-dial_string", peer.grpc_target, "-domain", DOMAIN,
                           "-descriptors", descriptor], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    response = next(line for line in done.stdout.splitlines() if line.startswith("response:"))
    return response


def test_the_peer_reads_the_whole_rules_file(peer):
    assert peer.domain == DOMAIN and peer.grpc_target == f"127.0.0.1:{peer.grpc_port}"
    config = Path(peer.workdir) / "runtime" / "ratelimit" / "config" / f"{DOMAIN}.yaml"
    assert config.read_text() == RULES_YAML


def test_client_cmd_sees_ok_then_over_limit(peer):
    first = _client(peer, "tiny=client-cmd")  # tiny: 2 per day
    assert "overall_code:OK" in first.replace(" ", "") and "limit_remaining:1" in first.replace(" ", "")
    second = _client(peer, "tiny=client-cmd")
    assert "overall_code:OK" in second.replace(" ", "")
    third = _client(peer, "tiny=client-cmd")
    assert "overall_code:OVER_LIMIT" in third.replace(" ", "")


def test_our_stubs_see_the_rules_shapes(peer):
    sequence = [([[("internal", "x")]], 1), ([[("shadow", "stubs")]], 5), ([[("user", "vip-check")]], 1),
                ([[("plan", "free")], [("plan_override", "stubs")]], 1)]
    answers = run(peer.grpc_target, sequence)
    assert answers[0] == ("OK", [("OK", 4_294_967_295)])  # unlimited
    assert answers[1] == ("OK", [("OK", 0)])  # over its limit of 3, in shadow mode
    assert answers[2] == ("OK", [("OK", 3)])  # key-only user: 4 per hour
    assert answers[3] == ("OK", [("OK", 0), ("OK", 19)])  # free_plan replaced: no limit


def test_ghz_with_the_protoset_gets_200_ok_answers(peer, tmp_path):
    protoset = write_protoset(tmp_path / "rls.protoset")
    data = {"domain": DOMAIN, "descriptors": [{"entries": [{"key": "internal", "value": "ghz-{{randomInt 1 50}}"}]}]}
    done = subprocess.run([str(build_ghz()), "--insecure", "--protoset", str(protoset), "--call", CALL, "-n", "200",
                           "-c", "4", "--format", "json", "-d", json.dumps(data), peer.grpc_target],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["count"] == 200 and report["statusCodeDistribution"] == {"OK": 200}


def test_the_differential_sequence_runs_against_the_peer(peer):
    answers = run(peer.grpc_target, calls(60, 99))
    assert len(answers) == 60
    assert any(overall == "OVER_LIMIT" for overall, _ in answers)
    assert any(code == "OK" and remaining == 4_294_967_295 for _, statuses in answers for code, remaining in statuses)
