"""A worker runs the roles it is given: limiter, history, analytics (all by default)."""

import pytest

from ratewarden.service_cli import roles_env
from ratewarden.worker import create_app
from streams.loop_lag import LoopLagService
from streams.settings import Settings


def _services(settings: Settings) -> list[str]:
    """The role services (bound subclasses) the app registers after its loop probe, which every worker runs."""
    services = create_app(settings)._extra_services
    assert services[0] is LoopLagService
    return [service.__mro__[1].__name__ for service in services[1:]]


def test_roles_env_turns_on_exactly_the_named_roles():
    assert roles_env("limiter") == {"RATEWARDEN_LIMITER_ENABLED": "true", "RATEWARDEN_RLS_ENABLED": "false",
                                    "RATEWARDEN_HISTORY_ENABLED": "false", "RATEWARDEN_ANALYTICS_ENABLED": "false"}
    assert roles_env("rls")["RATEWARDEN_RLS_ENABLED"] == "true"
    assert set(roles_env(" history , analytics ").values()) == {"true", "false"}
    assert roles_env("history,analytics")["RATEWARDEN_LIMITER_ENABLED"] == "false"


@pytest.mark.parametrize("spec", ["", " , ", "limiter,gateway", "LIMITER"])
def test_unknown_or_empty_roles_are_refused(spec):
    with pytest.raises(ValueError, match="subset of limiter, rls, history, analytics"):
        roles_env(spec)


def test_the_app_registers_only_the_enabled_services(tmp_path):
    base = dict(var_dir=tmp_path, kafka_bootstrap_servers="unused:9092", analytics_enabled=False, rls_enabled=False)
    assert _services(Settings(**base)) == ["LimiterService", "HistoryService"]
    assert _services(Settings(**{**base, "rls_enabled": True})) == ["LimiterService", "RlsService", "HistoryService"]
    assert _services(Settings(**base, history_enabled=False)) == ["LimiterService"]
    assert _services(Settings(**base, limiter_enabled=False)) == ["HistoryService"]
