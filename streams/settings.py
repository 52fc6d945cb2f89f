"""Typed, frozen settings read from the environment: the one place for defaults.

Every variable is ``RATEWARDEN_<FIELD>`` (e.g. ``RATEWARDEN_DEFAULT_LIMIT=100``); the Kafka address
also honours the conventional ``KAFKA_BOOTSTRAP_SERVERS``. Secrets are ``SecretStr`` so they never
appear in logs or reprs.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RATEWARDEN_", frozen=True, extra="ignore")

    # Kafka connection; None means "the local broker started by `ratewarden kafka start`".
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "RATEWARDEN_KAFKA_BOOTSTRAP_SERVERS"),
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    app_id: str = "ratewarden"
    var_dir: Path = Path("var")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)

    requests_topic: str = "requests"
    decisions_topic: str = "decisions"
    dead_letter_topic: str = "requests-dead-letter"
    limits_topic: str = "rate-limits"
    blocklist_topic: str = "blocklist"

    default_limit: int = Field(default=100, ge=0)
    default_window: float = Field(default=60.0, gt=0, le=86_400)
    default_algorithm: Literal["fixed", "sliding"] = "fixed"

    max_event_bytes: int = Field(default=8192, ge=256, le=1_048_576)
    max_future_skew: float = Field(default=300.0, ge=0, description="seconds an event may lie ahead of wall time")

    flush_interval: float = Field(default=1.0, gt=0, le=60, description="seconds between state flushes")
    flush_events: int = Field(default=50_000, ge=1, description="events between state flushes")
    fetch_max_records: int = Field(default=5_000, ge=1)
    fetch_max_wait_ms: int = Field(default=5, ge=0, le=1_000)

    @property
    def state_dir(self) -> Path:
        return self.var_dir / "state"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-windows-changelog"

    @property
    def limiter_group(self) -> str:
        return f"{self.app_id}-limiter"

    def scoped(self, tag: str) -> "Settings":
        """The same settings on topics, groups and state of their own (tests, benchmarks, demos)."""
        return self.model_copy(
            update=dict(
                app_id=f"{self.app_id}-{tag}",
                requests_topic=f"{self.requests_topic}-{tag}",
                decisions_topic=f"{self.decisions_topic}-{tag}",
                dead_letter_topic=f"{self.dead_letter_topic}-{tag}",
                limits_topic=f"{self.limits_topic}-{tag}",
                blocklist_topic=f"{self.blocklist_topic}-{tag}",
                var_dir=self.var_dir / tag,
            )
        )

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
