"""Acceptance: ``ratewarden limits load`` refuses a rules file with errors, naming each line; nothing changes.

One bad file holds one mistake of each kind on a known line; the command (a subprocess with the
stack's settings in its environment, like any operator's shell) must print every one and exit 1,
and the rules a good file put in force before keep answering, counters and all. ``--check`` of a
valid file publishes nothing.
"""

import subprocess
import uuid

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from agents.rules_file import load_rules
from bench.rls_differential import rate_limit_request
from ratewarden.gateway.testing import GatewayStack, wait_until
from tests.support.cli import ratewarden as run_cli

pytestmark = pytest.mark.kafka

TAG = uuid.uuid4().hex[:8]
DOMAIN, CHECK_ONLY = f"rules-{TAG}", f"check-only-{TAG}"


def checkout_rule(domain: str, limit: int) -> str:
    """The head of a rules file: ``domain`` with a route=checkout limit of ``limit`` per hour."""
    return (f"domain: {domain}\ndescriptors:\n  - key: route\n    value: checkout\n"
            f"    rate_limit: {{unit: hour, requests_per_unit: {limit}}}\n")


GOOD = checkout_rule(DOMAIN, 4) + """\
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 100, name: per_user}
"""
#: The same domain: were any of it applied, route=checkout would count from 50.
BAD = checkout_rule(DOMAIN, 50) + """\
  - key: a1
    limit: {unit: hour, requests_per_unit: 1}
  - key: a2
    key: a2b
    rate_limit: {unit: hour, requests_per_unit: 1}
  - value: no-key
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: a4
    rate_limit: {unit: fortnight, requests_per_unit: 1}
  - key: a5
    rate_limit: {unit: hour, requests_per_unit: lots}
  - key: a6
    rate_limit: {unit: hour, requests_per_unit: 4294967296}
  - key: a7
    rate_limit: {requests_per_unit: 1}
  - key: a8
    rate_limit: {unit: hour}
  - key: a9
    rate_limit: {unit: hour, requests_per_unit: 1, algorithm: leaky}
  - key: a10
    unlimited: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: a11
    rate_limit: {unlimited: true, unit: hour}
  - key: a12
    rate_limit: {unit: hour, requests_per_unit: 1, name: twice}
  - key: a13
    rate_limit: {unit: hour, requests_per_unit: 1, name: twice}
  - key: a14
    rate_limit: {unit: hour, requests_per_unit: 1, name: me, replaces: [{name: me}]}
  - key: a15
    replaces: [{name: twice}]
  - key: a16
    quota_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: a17
    shadow_mode: maybe
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: a4
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: a19
    rate_limit: 5
  - key: a20
    descriptors: {key: x}
"""
#: line -> a fragment of its message: one kind of error each
EXPECTED = {
    7: "unknown field 'limit' in a descriptor",
    9: "duplicate field 'key'",
    11: "descriptor needs a non-empty 'key'",
    14: "unknown unit 'fortnight'",
    16: "'requests_per_unit' must be a whole number",
    18: "must be from 0 to 4294967295, not 4294967296",
    20: "rate_limit needs a 'unit'",
    22: "rate_limit needs 'requests_per_unit'",
    24: "unknown algorithm 'leaky'",
    27: "unlimited: true together with a rate_limit",
    29: "unlimited: true must not have a unit",
    33: "duplicate rate limit name 'twice' (first at line 31)",
    35: "cannot replace itself ('me')",
    37: "'replaces' without a rate_limit",
    39: "'quota_mode' is not supported",
    42: "'shadow_mode' must be true or false",
    44: "duplicate descriptor 'a4' (first at line 13)",
    47: "rate_limit must be a mapping",
    49: "'descriptors' must be a list",
}
CHECK = GOOD + "---\n" + checkout_rule(CHECK_ONLY, 1)
def ratewarden(stack: GatewayStack, *args: str) -> subprocess.CompletedProcess:
    return run_cli(stack.settings, *args)


def remaining(stack: GatewayStack, domain: str, key: str, value: str) -> tuple[int, int, bool]:
    """(overall code, limit_remaining, has a current limit) of one call with one descriptor."""
    request = rate_limit_request(domain, [[(key, value)]])
    with grpc.insecure_channel(stack.grpc_target) as channel:
        answer = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
            request, metadata=[("authorization", f"Bearer {stack.keys['service']}")], timeout=30)
    status = answer.statuses[0]
    return answer.overall_code, status.limit_remaining, status.HasField("current_limit")


def test_a_file_with_every_kind_of_error_is_refused_by_line_and_changes_nothing(kafka_bootstrap, tmp_path):
    assert len(set(EXPECTED.values())) >= 12 and BAD.splitlines()[12] == "  - key: a4"
    good, bad, check = tmp_path / "good.yaml", tmp_path / "bad.yaml", tmp_path / "check.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    check.write_text(CHECK)
    OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
    with GatewayStack(kafka_bootstrap, tmp_path, rls_grpc_port=0) as stack:
        loaded = ratewarden(stack, "limits", "load", str(good))
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        rules = stack.gateway.gateway.rules
        wait_until(lambda: rules.document(DOMAIN) is not None, 30, "the good rules applied")
        assert remaining(stack, DOMAIN, "route", "checkout") == (OK, 3, True)

        refused = ratewarden(stack, "limits", "load", str(bad))
        output = refused.stdout + refused.stderr
        assert refused.returncode == 1, output
        assert f"{len(EXPECTED)} error(s); nothing was applied" in output, output
        lines = output.splitlines()
        for line, fragment in EXPECTED.items():
            assert any(f"{bad}:{line}: " in text and fragment in text for text in lines), \
                f"line {line} ({fragment!r}) not reported:\n{output}"
        assert "Traceback" not in output

        checked = ratewarden(stack, "limits", "load", "--check", str(check))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "not published" in checked.stdout and CHECK_ONLY in checked.stdout

        listed = ratewarden(stack, "limits", "rules")  # reads the limits topic to its end
        assert listed.returncode == 0, listed.stdout + listed.stderr
        table = [row for row in listed.stdout.splitlines() if DOMAIN in row]
        assert any("route=checkout" in row and "4/hour" in row for row in table), listed.stdout
        assert any("user" in row and "100/hour" in row and "per_user" in row for row in table), listed.stdout
        assert "50/hour" not in listed.stdout and "a1" not in listed.stdout.split()
        assert CHECK_ONLY not in listed.stdout, "--check published nothing"

        # the good rules still in force: the same counter counts on, from the good limit of 4
        assert [remaining(stack, DOMAIN, "route", "checkout") for _ in range(4)] == \
            [(OK, 2, True), (OK, 1, True), (OK, 0, True), (OVER, 0, True)]
        assert remaining(stack, DOMAIN, "user", "u1") == (OK, 99, True)
        assert remaining(stack, CHECK_ONLY, "route", "x") == (OK, 0, False), "the --check domain is unknown"
        assert rules.document(CHECK_ONLY) is None
        assert rules.document(DOMAIN) == load_rules(GOOD)[0], "the gateway holds the good file's rules, whole"

        unloaded = ratewarden(stack, "limits", "unload", DOMAIN)
        assert unloaded.returncode == 0, unloaded.stdout + unloaded.stderr
        wait_until(lambda: rules.document(DOMAIN) is None, 30, "the domain removed")
        assert remaining(stack, DOMAIN, "route", "checkout") == (OK, 0, False), "no rules: no limit, as the reference"
        assert ratewarden(stack, "limits", "unload", DOMAIN).returncode == 2, "an unknown domain is an error"

