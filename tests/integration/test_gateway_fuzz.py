"""schemathesis against /openapi.json of a live gateway (real broker and worker), with an admin key.

Bounded: a few examples per operation and a time budget. Any 5xx, any answer whose status, content
type, headers or body the OpenAPI document does not allow, fails the test.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ratewarden.gateway.testing import GatewayStack

pytestmark = pytest.mark.kafka

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance",
])


def test_schemathesis_finds_no_server_error_and_no_schema_violation(kafka_bootstrap, tmp_path):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if cli is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    with GatewayStack(kafka_bootstrap, tmp_path, gateway_decision_timeout=2.0) as stack:
        run = subprocess.run(
            [cli, "run", f"{stack.url}/openapi.json", "--header", f"Authorization: Bearer {stack.keys['admin']}",
             "--checks", CHECKS, "--phases", "examples,coverage,fuzzing", "--max-examples", "15",
             # one worker: schemathesis' threads parsing sources at once hit CPython 3.11's spurious "AST
             # constructor recursion depth mismatch" (python/cpython#106905) in 3 of 5 runs with 24 operations
             "--max-time", "60", "--workers", "1", "--request-timeout", "10", "--seed", "1",
             "--exclude-operation-id", "delete_user_users__user_id__delete"],  # keep the admin key alive
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )
        summary = run.stdout[-12000:]
        with stack.client("admin") as admin:
            assert admin.get("/users/admin-1").status_code == 200, "the fuzzer must not have revoked the admin"
    assert run.returncode == 0, summary + run.stderr[-2000:]
