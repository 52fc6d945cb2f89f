"""Acceptance: envoyproxy/ratelimit + Redis and ratewarden, the same rules file and the same calls, the same answers.

The reference is the oracle: ``RULES_YAML`` (bench/rls_differential.py: nested, key-only, key+value,
unlimited, shadow, named/replaces, a tiny limit) loaded into both, then 5,000 deterministic calls sent
one at a time, each first to the peer and then to ratewarden (on the real broker); every call's overall
code and every status's code and ``limit_remaining`` must agree.
"""

import math
import time

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2_grpc

from bench.peers.envoy_ratelimit import EnvoyRateLimit, build, ensure_packages
from bench.rls_differential import DOMAIN, RULES_YAML, calls, call, compare
from ratewarden.gateway.testing import GatewayStack, wait_until
from ratewarden.rls.results import MAX_REMAINING

pytestmark = pytest.mark.kafka

N_CALLS = 5_000
SEED = 11
#: A generous bound on the calls' wall time (about 20 s here): a run must not straddle the top of an hour
#: (the rules' windows are hours and days; the reference reads its wall clock, ratewarden the gateway's).
RUN_BOUND_S = 120.0


def shape(descriptor: list[tuple[str, str]]) -> str:
    """The rule shape of RULES_YAML a descriptor exercises."""
    keys = [k for k, _ in descriptor]
    first_key, first_value = descriptor[0]
    if first_key == "route":
        return "nested" if keys == ["route", "method"] and first_value == "checkout" else "nested-other"
    if first_key == "user":
        return "key+value" if first_value == "vip" and len(keys) == 1 else "key-only"
    return {"internal": "unlimited", "shadow": "shadow", "plan": "named", "plan_override": "replaces",
            "tiny": "tiny"}.get(first_key, "no-rule")


def wait_for_a_whole_run_in_this_hour() -> None:
    """If the run could cross the top of an hour (or midnight), wait until the new hour has begun."""
    now = time.time()
    hour_ends = math.ceil(now / 3600) * 3600
    if hour_ends - now < RUN_BOUND_S:
        print(f"waiting {hour_ends - now:.0f} s for the next hour: the windows must not turn during the run")
        wait_until(lambda: time.time() >= hour_ends + 1, timeout=RUN_BOUND_S + 30, what="the next hour",
                   interval=0.5)


@pytest.fixture
def peer(tmp_path):
    ensure_packages(print, ("redis-server",))
    service = EnvoyRateLimit(build(), tmp_path / "envoy-ratelimit", rules=RULES_YAML)
    service.start()
    try:
        yield service
    finally:
        service.stop()  # Redis and the service, by PID


def test_the_same_calls_get_the_same_answers_from_the_reference_and_ratewarden(kafka_bootstrap, tmp_path, peer):
    sequence = calls(N_CALLS, SEED)
    shapes = {shape(d) for descriptors, _ in sequence for d in descriptors}
    assert {"nested", "key-only", "key+value", "unlimited", "shadow", "named", "replaces", "tiny"} <= shapes
    with GatewayStack(kafka_bootstrap, tmp_path, rls_grpc_port=0) as stack:
        stack.load_rules(RULES_YAML)
        ours_metadata = (("authorization", f"Bearer {stack.keys['service']}"),)
        with grpc.insecure_channel(peer.grpc_target) as peer_channel, \
                grpc.insecure_channel(stack.grpc_target) as our_channel:
            reference = rls_pb2_grpc.RateLimitServiceStub(peer_channel)
            ours = rls_pb2_grpc.RateLimitServiceStub(our_channel)
            wait_for_a_whole_run_in_this_hour()
            started, started_at = time.monotonic(), time.time()
            peer_answers, our_answers = [], []
            for descriptors, hits in sequence:
                peer_answers.append(call(reference, DOMAIN, descriptors, hits))
                our_answers.append(call(ours, DOMAIN, descriptors, hits, ours_metadata))
            wall = time.monotonic() - started
    print(f"{len(sequence)} calls compared (each to both services) in {wall:.1f} s")

    mismatches = compare(peer_answers, our_answers, sequence, ("envoyproxy/ratelimit", "ratewarden"))
    crossed = int(started_at // 3600) != int(time.time() // 3600)
    assert mismatches == [], (f"{len(mismatches)} of {len(sequence)} calls differ"
                              f"{' (the run crossed the top of an hour)' if crossed else ''}:\n"
                              + "\n".join(mismatches[:30]))

    # the sequence reached every interesting answer, so agreeing on it means something
    assert any(overall == "OVER_LIMIT" for overall, _ in peer_answers)
    by_shape: dict[str, set[tuple[str, int]]] = {}
    for (descriptors, _), (_, statuses) in zip(sequence, peer_answers):
        for d, status in zip(descriptors, statuses):
            by_shape.setdefault(shape(d), set()).add(status)
    assert ("OK", 0) in by_shape["shadow"], "a shadow-mode descriptor over its limit answered OK with 0"
    assert ("OVER_LIMIT", 0) not in by_shape["shadow"]
    assert by_shape["unlimited"] == {("OK", MAX_REMAINING)} and MAX_REMAINING == 4_294_967_295
    assert any(code == "OVER_LIMIT" for code, _ in by_shape["tiny"] | by_shape["key-only"] | by_shape["nested"])
    assert any(code == "OVER_LIMIT" for code, _ in by_shape["key+value"])
    # the replaced limit: call 12 holds plan=free (6/hour, hit once before) beside plan_override, which
    # replaces free_plan, so plan=free has no limit in that call: OK with 0 remaining, not 4
    replaced = next(i for i, (descriptors, _) in enumerate(sequence)
                    if [shape(d) for d in descriptors] == ["named", "replaces"])
    assert peer_answers[replaced][1][0] == ("OK", 0) and peer_answers[replaced][1][1][0] == "OK"
    assert any(status[0] == "OVER_LIMIT" for status in by_shape["named"]), "free_plan alone still limits"
