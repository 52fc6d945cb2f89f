"""docker/ cannot be run here (no Docker engine); check what can be checked without one."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from ratewarden.cli import build_parser

DOCKER = Path(__file__).resolve().parents[2] / "docker"
# The Compose Specification's JSON Schema, pinned (origin, version and license: tests/data/README.md).
COMPOSE_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"


def compose_document() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def compose_errors(document: dict) -> list[str]:
    """What the Compose Specification's schema finds wrong in ``document`` (empty: valid)."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


def test_the_pinned_schema_is_the_compose_specification_and_a_valid_draft_7_schema():
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    assert {"services", "volumes", "networks", "name"} <= set(schema["properties"])


def test_compose_file_is_valid_under_the_compose_specification_schema():
    assert compose_errors(compose_document()) == []


def _break(document: dict, path: str, value) -> dict:
    """A copy of ``document`` with ``value`` set at the ``/``-separated ``path``."""
    broken = copy.deepcopy(document)
    *parents, last = path.split("/")
    node = broken
    for part in parents:
        node = node[part]
    node[last] = value
    return broken


@pytest.mark.parametrize(
    "path,value,where",
    [
        ("services/gateway/commnd", ["gateway"], "services/gateway"),  # a misspelt key
        ("servics", {}, "<root>"),  # an unknown top-level key
        ("services/worker-1/depends_on/kafka/condition", "healthy", "services/worker-1/depends_on"),  # not in the enum
        ("services/kafka/healthcheck/retries", [12], "services/kafka/healthcheck/retries"),  # neither number nor string
        ("services/gateway/ports", "8080:8080", "services/gateway/ports"),  # a string where a list goes
    ],
)
def test_a_broken_compose_document_is_rejected(path, value, where):
    errors = compose_errors(_break(compose_document(), path, value))
    assert errors, f"the schema accepted {path} = {value!r}"
    assert any(error.startswith(f"{where}: ") for error in errors), errors


def test_compose_runs_kafka_two_workers_and_the_gateway_with_health_checks():
    services = compose_document()["services"]
    assert {"kafka", "worker-1", "worker-2", "gateway"} <= set(services)
    for name in ("worker-1", "worker-2", "gateway", "kafka"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("worker-1", "worker-2", "gateway"):
        service = services[name]
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        build_parser().parse_args(service["command"])  # every command is one the CLI accepts
    assert services["kafka"]["environment"]["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1


def test_dockerfile_installs_the_project_and_runs_the_cli():
    text = (DOCKER / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in text and 'ENTRYPOINT ["ratewarden"]' in text
    for package in ("schemas", "streams", "agents", "ratewarden"):
        assert f"COPY {package} ./{package}" in text
    assert "USER ratewarden" in text
