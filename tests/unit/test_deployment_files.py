"""docker/ cannot be run here (no Docker engine); check what can be checked without one."""

from pathlib import Path

import yaml

from ratewarden.cli import build_parser

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_compose_runs_kafka_two_workers_and_the_gateway_with_health_checks():
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    services = compose["services"]
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
