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
    users_topic: str = "users"
    history_owners_topic: str = "history-owners"

    default_limit: int = Field(default=100, ge=0)
    default_window: float = Field(default=60.0, ge=0.001, le=86_400)
    default_algorithm: Literal["fixed", "sliding"] = "fixed"

    max_event_bytes: int = Field(default=8192, ge=256, le=1_048_576)
    max_future_skew: float = Field(default=300.0, ge=0, description="seconds an event may lie ahead of wall time")

    limiter_enabled: bool = Field(default=True, description="this worker decides requests (the hot path)")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    flush_interval: float = Field(default=1.0, gt=0, le=60, description="seconds between state flushes")
    flush_events: int = Field(default=50_000, ge=1, description="events between state flushes")
    fetch_max_records: int = Field(default=1_000, ge=1, description="records per fetched batch: smaller batches, shorter waits")
    fetch_max_wait_ms: int = Field(default=5, ge=0, le=1_000)

    # Abuse analytics (docs/analytics.md): per-IP windows, detector thresholds, automatic bans.
    analytics_enabled: bool = True
    ip_features_topic: str = "ip-features"
    ip_flags_topic: str = "ip-flags"
    abuse_reports_topic: str = "abuse-reports"
    analytics_window: float = Field(default=60.0, gt=0, le=3_600, description="seconds of event time per window")
    analytics_grace: float = Field(default=5.0, ge=0, le=3_600, description="event-time lateness a window waits for")
    analytics_idle: float = Field(
        default=10.0, gt=0, description="wall seconds a window waits for a silent source before it is forced out"
    )
    analytics_corrections_kept: int = Field(
        default=16, ge=1, description="forced-out windows kept to be corrected by partials that arrive late"
    )
    abuse_z: float = Field(default=6.0, gt=0, description="robust z-score (median/MAD) that marks an outlier")
    flood_min_requests: int = Field(default=300, ge=1, description="requests per window")
    flood_min_requests_per_user: float = Field(default=100.0, gt=0)
    stuffing_min_users: int = Field(default=10, ge=2)
    stuffing_login_share: float = Field(default=0.7, gt=0, le=1)
    stuffing_users_per_request: float = Field(default=0.3, gt=0, le=1)
    slow_stuffing_min_users: int = Field(default=3, ge=2, description="per IP, in a low-and-slow campaign")
    slow_stuffing_min_ips: int = Field(default=5, ge=1, description="IPs of the same shape in one window")
    slow_stuffing_login_share: float = Field(default=0.9, gt=0, le=1)
    scraper_min_requests: int = Field(default=120, ge=1)
    scraper_type_share: float = Field(default=0.9, gt=0, le=1)
    scraper_min_span: float = Field(default=0.5, ge=0, le=1, description="share of the window the IP is active")
    hammer_min_requests: int = Field(default=60, ge=1)
    hammer_refused_share: float = Field(default=0.5, gt=0, le=1)
    allowlist_cidrs: str = Field(default="", description="comma-separated CIDRs: reported, never banned")
    ban_ttl: float = Field(default=300.0, gt=0, description="seconds of event time of a first ban")
    ban_ttl_factor: float = Field(default=4.0, ge=1, description="each repeat offence multiplies the TTL")
    ban_ttl_max: float = Field(default=86_400.0, gt=0)
    offence_memory: float = Field(default=7 * 86_400.0, gt=0, description="an offence older than this is forgotten")
    ban_offences_topic: str = Field(default="ban-offences", description="compacted: the last automatic ban per IP")

    # The HTTP gateway (`ratewarden gateway`) and the request history the workers serve to it.
    gateway_decision_timeout: float = Field(default=2.0, gt=0, le=60, description="seconds to wait for a decision")
    gateway_fail_mode: Literal["open", "closed"] = Field(default="open", description="no decision in time: allow or 503")
    gateway_history_timeout: float = Field(default=5.0, gt=0, le=60, description="seconds to get a history read")
    gateway_max_body_bytes: int = Field(default=16_384, ge=256, le=1_048_576)
    gateway_trusted_proxies: str = Field(default="", description="comma-separated IPs/CIDRs trusted for X-Forwarded-For")
    gateway_auth_max_failures: int = Field(default=20, ge=0, description="wrong keys per window before an address gets 429; 0: off")
    gateway_auth_failure_window: float = Field(default=60.0, gt=0, le=86_400, description="seconds failures are counted and refused")
    gateway_auth_exempt_cidrs: str = Field(default="", description="comma-separated IPs/CIDRs never limited for failed keys")
    gateway_auth_max_addresses: int = Field(default=100_000, ge=1, description="addresses the failed-key limiter keeps")
    history_enabled: bool = Field(default=True, description="workers keep and serve the request history")
    history_max_count: int = Field(default=100, ge=1, le=10_000, description="requests kept per user")
    history_max_age: float = Field(default=86_400.0, gt=0, description="seconds of event time kept per user")
    history_host: str = "127.0.0.1"
    history_port: int = Field(default=0, ge=0, le=65_535, description="worker history port; 0: any free port")
    history_url: str | None = Field(default=None, description="URL the gateway reaches this worker's history at")
    history_token: SecretStr | None = None

    @property
    def state_dir(self) -> Path:
        return self.var_dir / "state"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-windows-changelog"

    @property
    def limiter_group(self) -> str:
        return f"{self.app_id}-limiter"

    @property
    def analytics_group(self) -> str:
        return f"{self.app_id}-analytics"

    @property
    def analytics_merge_group(self) -> str:
        return f"{self.app_id}-analytics-ip"

    @property
    def allowlist(self) -> list[str]:
        return [cidr.strip() for cidr in self.allowlist_cidrs.split(",") if cidr.strip()]

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
                ban_offences_topic=f"{self.ban_offences_topic}-{tag}",
                ip_features_topic=f"{self.ip_features_topic}-{tag}",
                ip_flags_topic=f"{self.ip_flags_topic}-{tag}",
                abuse_reports_topic=f"{self.abuse_reports_topic}-{tag}",
                users_topic=f"{self.users_topic}-{tag}",
                history_owners_topic=f"{self.history_owners_topic}-{tag}",
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
