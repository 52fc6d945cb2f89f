"""Typed, frozen settings read from the environment: the one place for defaults.

Every variable is ``RATEWARDEN_<FIELD>`` (e.g. ``RATEWARDEN_DEFAULT_LIMIT=100``); the Kafka address
also honours the conventional ``KAFKA_BOOTSTRAP_SERVERS``. Secrets are ``SecretStr`` so they never
appear in logs or reprs. The fields are declared in sections (``streams.settings_sections``); a
component is given the sections it uses (``settings.kafka``, ``settings.limiter``, ...), the
composition root the whole.
"""

from functools import lru_cache
from pathlib import Path
from typing import Generic, TypeVar

from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.settings_sections import (
    AnalyticsSettings,
    BanSettings,
    ConsoleSettings,
    DetectorSettings,
    GatewaySettings,
    HistorySettings,
    KafkaSettings,
    LimiterSettings,
    RlsSettings,
    Section,
    TopicSettings,
)

__all__ = ["Settings", "get_settings"]

S = TypeVar("S", bound=Section)


class _SectionOf(Generic[S]):
    """``settings.<name>``: the fields of one section, as a frozen object of their own."""

    def __init__(self, kind: type[S]) -> None:
        self.kind = kind

    def __get__(self, settings: "Settings | None", owner: type | None = None) -> S:
        if settings is None:
            return self  # type: ignore[return-value]
        return settings.section(self.kind)


class Settings(
    KafkaSettings, TopicSettings, LimiterSettings, HistorySettings, DetectorSettings, BanSettings,
    AnalyticsSettings, GatewaySettings, RlsSettings, ConsoleSettings, BaseSettings,
):
    """Every setting; read once per process from ``RATEWARDEN_*`` variables (:func:`get_settings`)."""

    model_config = SettingsConfigDict(env_prefix="RATEWARDEN_", frozen=True, extra="ignore", ignored_types=(_SectionOf,))

    def section(self, kind: type[S]) -> S:
        """The fields of one section, as a frozen object of their own (already validated here)."""
        return kind.model_construct(**{name: getattr(self, name) for name in kind.model_fields})

    kafka = _SectionOf(KafkaSettings)
    topics = _SectionOf(TopicSettings)
    limiter = _SectionOf(LimiterSettings)
    history = _SectionOf(HistorySettings)
    detectors = _SectionOf(DetectorSettings)
    bans = _SectionOf(BanSettings)
    analytics = _SectionOf(AnalyticsSettings)
    gateway = _SectionOf(GatewaySettings)
    rls = _SectionOf(RlsSettings)
    console = _SectionOf(ConsoleSettings)

    @property
    def state_dir(self) -> Path:
        return self.var_dir / "state"

    @property
    def limiter_group(self) -> str:
        return f"{self.app_id}-limiter"

    @property
    def rls_group(self) -> str:
        return f"{self.app_id}-rls"

    @property
    def analytics_group(self) -> str:
        return f"{self.app_id}-analytics"

    @property
    def analytics_merge_group(self) -> str:
        return f"{self.app_id}-analytics-ip"

    def scoped(self, tag: str) -> "Settings":
        """The same settings on topics, groups and state of their own (tests, benchmarks, demos)."""
        topics = {name: f"{getattr(self, name)}-{tag}" for name in TopicSettings.model_fields if name.endswith("_topic")}
        return self.model_copy(update={**topics, "app_id": f"{self.app_id}-{tag}", "var_dir": self.var_dir / tag})

    def to_env(self) -> dict[str, str]:
        """Environment variables that give a child process these settings."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            env[f"RATEWARDEN_{name.upper()}"] = str(value)
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
