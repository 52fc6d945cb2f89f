"""Acceptance: the reference's own ``client_cmd`` against ratewarden over mutual TLS, on the real broker.

``client_cmd`` sends no metadata (no bearer key), so the gRPC port requires client certificates: a CA,
a server certificate for IP 127.0.0.1 and a client certificate, made with ``openssl`` into tmp_path.
A verified client certificate authenticates the call; without one the call fails.
"""

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from bench.peers.envoy_ratelimit import build_client
from ratewarden.gateway.testing import GatewayStack, wait_until

pytestmark = pytest.mark.kafka

DOMAIN = f"cmd-{uuid.uuid4().hex[:8]}"
RULES = f"""\
domain: {DOMAIN}
descriptors:
  - key: route                 # key+value: 3 per hour
    value: checkout
    rate_limit: {{unit: hour, requests_per_unit: 3}}
    descriptors:               # nested: route=checkout -> user (any value)
      - key: user
        rate_limit: {{unit: hour, requests_per_unit: 2}}
"""


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)} failed:\n{done.stderr}"


def make_certificates(d: Path) -> Path:
    """ca.pem, server.pem/.key (IP 127.0.0.1), client.pem/.key signed by the CA, in ``d``."""
    assert shutil.which("openssl"), "the `openssl` command makes the test certificates: apt-get install openssl"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ratewarden-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    extensions = {"server": "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
                  "client": "subjectAltName=DNS:client-cmd\nextendedKeyUsage=clientAuth\n"}
    for name, ext in extensions.items():
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"))
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "1", "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
    return d


def client_cmd(target: str, certs: Path, descriptors: str, client_cert: bool = True) -> subprocess.CompletedProcess:
    tls = ["-grpc-use-tls", "-grpc-server-ca-file", str(certs / "ca.pem")]
    if client_cert:
        tls += ["-grpc-cert-file", str(certs / "client.pem"), "-grpc-key-file", str(certs / "client.key")]
    return subprocess.run([str(build_client()), "-dial_string", target, "-domain", DOMAIN, "-descriptors", descriptors,
                           *tls], capture_output=True, text=True, timeout=60)


def response(done: subprocess.CompletedProcess) -> str:
    """client_cmd's printed ``response:`` line (Go's text form: zero fields, like ``limit_remaining:0``, left out)."""
    assert done.returncode == 0, done.stdout + done.stderr
    return next(line for line in done.stdout.splitlines() if line.startswith("response:"))


def overall(line: str) -> str:
    return re.search(r"overall_code:\s*(\w+)", line).group(1)


def remaining(response: str) -> int:
    found = re.search(r"limit_remaining:\s*(\d+)", response)
    return int(found.group(1)) if found else 0


def test_client_cmd_over_mtls_gets_the_answers_the_rules_imply(kafka_bootstrap, tmp_path):
    (tmp_path / "certs").mkdir()
    certs = make_certificates(tmp_path / "certs")
    assert build_client().exists()
    with GatewayStack(kafka_bootstrap, tmp_path, rls_grpc_port=0, rls_tls_cert_file=certs / "server.pem",
                      rls_tls_key_file=certs / "server.key", rls_client_ca_file=certs / "ca.pem") as stack:
        stack.load_rules(RULES)
        target = stack.grpc_target
        assert target.startswith("127.0.0.1:")
        # the first call after start may race the port's first handshake: wait for one clean answer
        wait_until(lambda: client_cmd(target, certs, "unmatched=warm-up").returncode == 0, 30,
                   "a first client_cmd answer")

        lines = [response(client_cmd(target, certs, "route=checkout")) for _ in range(5)]
        assert [overall(line) for line in lines] == ["OK", "OK", "OK", "OVER_LIMIT", "OVER_LIMIT"], lines
        assert [remaining(line) for line in lines[:3]] == [2, 1, 0], lines
        assert "requests_per_unit:3" in lines[0].replace(" ", "") and "unit:HOUR" in lines[0].replace(" ", "")

        nested_lines = [response(client_cmd(target, certs, "route=checkout,user=u1")) for _ in range(3)]
        assert [overall(line) for line in nested_lines] == ["OK", "OK", "OVER_LIMIT"]
        assert [remaining(line) for line in nested_lines[:2]] == [1, 0]
        assert "requests_per_unit:2" in nested_lines[0].replace(" ", "")

        keyless = client_cmd(target, certs, "route=checkout", client_cert=False)
        assert keyless.returncode != 0 and "response:" not in keyless.stdout, keyless.stdout + keyless.stderr
        assert "request error" in keyless.stdout, keyless.stdout + keyless.stderr  # the handshake refused it
