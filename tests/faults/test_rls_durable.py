"""The rate limit service's counters survive kill -9: a new worker restores them from the changelog.

The reference keeps its counts in Redis; here they are RocksDB state behind a compacted changelog.
Calls counted before the crash stay counted, hits published while no worker runs are counted when
one comes back (their callers were answered by the failure mode), and nothing is counted twice.
"""

import os
import signal
import uuid

import msgspec
import pytest

from bench.rls_differential import run
from ratewarden.client import read_topic_records
from ratewarden.gateway.testing import GatewayStack, wait_until

pytestmark = pytest.mark.kafka

RULES = """\
domain: durable
descriptors:
  - key: remote_address
    rate_limit: {unit: day, requests_per_unit: 1000}
"""


def remaining_after_calls(stack: GatewayStack, ip: str, n: int) -> list[tuple[str, int]]:
    """``n`` calls for ``ip``: (overall code, limit_remaining) of each."""
    answers = run(stack.grpc_target, [([[("remote_address", ip)]], 1)] * n, "durable", stack.keys["service"])
    return [(overall, statuses[0][1]) for overall, statuses in answers]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_counts_survive_kill_minus_nine_of_the_worker(kafka_bootstrap, tmp_path, guarantee):
    ip = f"192.0.2.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    with GatewayStack(kafka_bootstrap, tmp_path, rls_grpc_port=0, processing_guarantee=guarantee,
                      rls_decision_timeout=0.5) as stack:
        stack.load_rules(RULES)
        before = remaining_after_calls(stack, ip, 300)
        assert [r for _, r in before] == list(range(999, 699, -1)), "counted down from 1,000 before the crash"

        victim = stack.workers.pop("w1")
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL
        unanswered = remaining_after_calls(stack, ip, 5)  # no worker: the failure mode answers (open: OK)
        assert all(code == "OK" for code, _ in unanswered)

        stack.start_worker("w2")
        stack.wait_ready()

        def counts() -> list[int]:
            answers = [msgspec.json.decode(r.value) for r in read_topic_records(
                stack.settings, stack.settings.rls_decisions_topic, isolation_level="read_committed")]
            return [a["count"] for a in answers if ip in a["counter"]]

        # The 5 hits published while no worker ran are counted once the new one owns the counter.
        wait_until(lambda: max(counts(), default=0) >= 305, what="the hits published meanwhile counted")
        after = remaining_after_calls(stack, ip, 10)
        assert [r for _, r in after] == list(range(694, 684, -1)), "restored from the changelog, not from zero"
        final = wait_until(lambda: (c := counts()) and max(c) >= 315 and c, what="the last answers committed")
        assert sorted(set(final)) == list(range(1, 316)), "every hit counted: none lost, none counted twice"
        if guarantee == "exactly_once":
            assert len(final) == 315, "read_committed: each answer once"
