"""The sections of :class:`streams.settings.Settings`: each holds the fields one part of the system uses.

A section is a frozen model of its own; ``Settings`` inherits every section's fields (so each is
still read from its ``RATEWARDEN_<FIELD>`` variable, as documented) and hands out the sections as
``settings.kafka``, ``settings.topics``, ``settings.limiter``, ``settings.history``,
``settings.detectors``, ``settings.bans``, ``settings.analytics`` and ``settings.gateway``. Field
names are the same in a section and in the whole, so a function that takes a section also accepts
the whole settings object.
"""

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr

from schemas.limits import Algorithm

__all__ = [
    "Section", "KafkaSettings", "TopicSettings", "LimiterSettings", "HistorySettings", "DetectorSettings",
    "BanSettings", "AnalyticsSettings", "GatewaySettings", "RlsSettings", "ConsoleSettings",
]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class KafkaSettings(Section):
    """How to reach the brokers; no address means "the local broker started by `ratewarden kafka start`"."""

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


class TopicSettings(Section):
    """Topic names, partitions and replication (``ensure_topics`` creates them)."""

    app_id: str = "ratewarden"
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    requests_topic: str = "requests"
    decisions_topic: str = "decisions"
    dead_letter_topic: str = "requests-dead-letter"
    limits_topic: str = "rate-limits"
    blocklist_topic: str = "blocklist"
    users_topic: str = "users"
    history_owners_topic: str = "history-owners"
    ip_features_topic: str = "ip-features"
    ip_flags_topic: str = "ip-flags"
    abuse_reports_topic: str = "abuse-reports"
    ban_offences_topic: str = Field(default="ban-offences", description="compacted: the last automatic ban per IP")
    replies_topic: str = Field(default="replies", description="decisions routed back to gateways (docs/gateway.md)")
    replies_partitions: int = Field(default=16, ge=1, le=1024, description="reply partitions: gateways pick one each")
    rls_hits_topic: str = Field(default="rls-hits", description="descriptor hits of rate limit service calls, keyed by counter")
    rls_decisions_topic: str = Field(default="rls-decisions", description="every descriptor answer (audit)")
    advice_topic: str = Field(default="advice", description="compacted: the latest `advise --publish` (GET /advice)")
    allowlist_topic: str = Field(default="allowlist", description="compacted: the runtime allow-list, keyed by CIDR "
                                 "(beside the static ALLOWLIST_CIDRS)")

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-windows-changelog"

    @property
    def rls_changelog_topic(self) -> str:
        return f"{self.app_id}-rls-changelog"


class LimiterSettings(Section):
    """The hot path: default limit, intake bounds, processing guarantee, flush and fetch sizes."""

    default_limit: int = Field(default=100, ge=0)
    default_window: float = Field(default=60.0, ge=0.001, le=86_400)
    default_algorithm: Algorithm = "fixed"
    max_event_bytes: int = Field(default=8192, ge=256, le=1_048_576)
    max_future_skew: float = Field(default=300.0, ge=0, description="seconds an event may lie ahead of wall time")
    limiter_enabled: bool = Field(default=True, description="this worker decides requests (the hot path)")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    flush_interval: float = Field(default=1.0, gt=0, le=60, description="seconds between state flushes")
    flush_events: int = Field(default=50_000, ge=1, description="events between state flushes")
    fetch_max_records: int = Field(default=1_000, ge=1, description="records per fetched batch: smaller batches, shorter waits")
    fetch_max_wait_ms: int = Field(default=5, ge=0, le=1_000, description="how long the broker holds a fetch of "
                                   "the hot-path consumers (limiter, history, analytics stage 1); stage 2 waits 200 ms")


class HistorySettings(Section):
    """The request history the workers keep and serve to the gateway."""

    history_enabled: bool = Field(default=True, description="workers keep and serve the request history")
    history_max_count: int = Field(default=100, ge=1, le=10_000, description="requests kept per user")
    history_max_age: float = Field(default=86_400.0, gt=0, description="seconds of event time kept per user")
    history_host: str = "127.0.0.1"
    history_port: int = Field(default=0, ge=0, le=65_535, description="worker history port; 0: any free port")
    history_url: str | None = Field(default=None, description="URL the gateway reaches this worker's history at")
    history_token: SecretStr | None = None


class DetectorSettings(Section):
    """Detector thresholds (docs/analytics.md): what makes an IP's window suspicious."""

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
    scraper_min_span: float = Field(default=0.6, ge=0, le=1, description="share of the window the IP is active")
    hammer_min_requests: int = Field(default=60, ge=1)
    hammer_refused_share: float = Field(default=0.5, gt=0, le=1)
    hammer_min_span: float = Field(default=0.5, ge=0, le=1, description="shorter hammering is a burst: low severity")
    stuffing_failure_share: float = Field(default=0.5, gt=0, le=1, description="failed logins, when events carry a status")
    retry_error_share: float = Field(default=0.3, gt=0, le=1, description="5xx answers: a client retrying, low severity")
    outcome_min_logins: int = Field(default=5, ge=1, description="logins with a status before the failure share is used")
    network_v6_prefix: int = Field(default=64, ge=16, le=128, description="IPv6 addresses are aggregated per this prefix")
    network_v4_prefix: int = Field(default=32, ge=8, le=32, description="IPv4 aggregation prefix (e.g. 24); 32: off")
    network_min_addresses: int = Field(default=4, ge=2, description="a network is judged as one only with this many addresses")
    network_max_top_share: float = Field(default=0.5, gt=0, le=1, description="... and no address with more of its requests")
    rotation_min_users: int = Field(default=20, ge=2, description="accounts per window of an account-rotating source")
    rotation_new_share: float = Field(default=0.8, gt=0, le=1, description="share of them never active before")
    rotation_max_requests_per_user: float = Field(default=1.5, ge=1, description="throwaway accounts make a request or two")
    victim_min_networks: int = Field(default=3, ge=2, description="networks one account is tried from in a window: a victim")
    victim_min_users: int = Field(default=2, ge=1, description="victim accounts per source of distributed stuffing")
    victim_share: float = Field(default=0.5, gt=0, le=1, description="victims among the source's accounts")
    victim_memory: float = Field(default=300.0, ge=0, description="event-time seconds an account stays a victim")
    victim_min_sources: int = Field(default=5, ge=1, description="sources of that shape in one window: a campaign")
    account_memory_capacity: int = Field(default=100_000, ge=1_000, description="accounts per memory generation")
    account_memory_span: float = Field(default=3_600.0, gt=0, description="event-time seconds per memory generation")
    account_memory_generations: int = Field(default=24, ge=1, description="generations kept: the memory's reach")
    account_warmup: float = Field(default=600.0, ge=0, description="event time the memory must cover before new-account rules")
    crowd_baseline_windows: int = Field(default=10, ge=1, description="windows of the population baseline")
    crowd_min_factor: float = Field(default=2.0, gt=1, description="median requests per IP over baseline: a crowd")
    severity_high_z: float = Field(default=25.0, gt=0, description="a score that raises a medium flag to high")
    allowlist_cidrs: str = Field(default="", description="comma-separated CIDRs: reported, never banned")

    @property
    def allowlist(self) -> list[str]:
        return [cidr.strip() for cidr in self.allowlist_cidrs.split(",") if cidr.strip()]


class BanSettings(Section):
    """Automatic bans: how long, how they grow with repeat offences, how long offences are remembered."""

    ban_ttl: float = Field(default=300.0, gt=0, description="seconds of event time of a first ban")
    ban_ttl_factor: float = Field(default=4.0, ge=1, description="each repeat offence multiplies the TTL")
    ban_ttl_max: float = Field(default=86_400.0, gt=0)
    offence_memory: float = Field(default=7 * 86_400.0, gt=0, description="an offence older than this is forgotten")
    ban_low_severity: Literal["report", "short"] = Field(
        default="report", description="a low-severity first offence: reported only, or a short ban"
    )
    ban_short_ttl: float = Field(default=60.0, gt=0, description="seconds of event time of a short ban")
    ban_timing: Literal["arrival", "event_time"] = Field(
        default="arrival",
        description="arrival: a ban applies from when it reaches the limiter; event_time: from its window's end plus "
                    "ban_delay, the limiter waiting (ban_wait at most) until the analytics have judged that far, so "
                    "replays give identical verdicts (docs/analytics.md)",
    )
    ban_delay: float = Field(
        default=20.0, ge=0, le=3_600,
        description="event_time: seconds of event time from a window's end to its bans' start; more than analytics_grace",
    )
    ban_wait: float = Field(default=30.0, gt=0, le=3_600, description="event_time: wall seconds the limiter waits for bans")

    @property
    def ban_start_delay(self) -> float:
        """Event time from a flagged window's end to its ban's start."""
        return self.ban_delay if self.ban_timing == "event_time" else 0.0


class AnalyticsSettings(Section):
    """Abuse analytics windows: length, lateness, and how long a silent source is waited for."""

    analytics_enabled: bool = True
    analytics_window: float = Field(default=60.0, gt=0, le=3_600, description="seconds of event time per window")
    analytics_grace: float = Field(default=5.0, ge=0, le=3_600, description="event-time lateness a window waits for")
    analytics_idle: float = Field(
        default=10.0, gt=0, description="wall seconds a window waits for a silent source before it is forced out"
    )
    analytics_corrections_kept: int = Field(
        default=16, ge=1, description="forced-out windows kept to be corrected by partials that arrive late"
    )


class GatewaySettings(Section):
    """The HTTP gateway (`ratewarden gateway`): timeouts, sizes, proxies and failed-key limits."""

    gateway_decision_timeout: float = Field(default=2.0, gt=0, le=60, description="seconds to wait for a decision")
    gateway_fail_mode: Literal["open", "closed"] = Field(default="open", description="no decision in time: allow or 503")
    gateway_history_timeout: float = Field(default=5.0, gt=0, le=60, description="seconds to get a history read")
    gateway_max_body_bytes: int = Field(default=16_384, ge=256, le=1_048_576)
    gateway_batch_max_items: int = Field(default=1_000, ge=1, le=10_000, description="requests per POST /requests/batch")
    gateway_batch_max_body_bytes: int = Field(default=262_144, ge=256, le=16_777_216,
                                              description="body bound of POST /requests/batch")
    gateway_reply_partition: int | None = Field(default=None, ge=0,
                                                description="this gateway's reply partition; unset: one chosen at random")
    gateway_trusted_proxies: str = Field(default="", description="comma-separated IPs/CIDRs trusted for X-Forwarded-For")
    gateway_auth_max_failures: int = Field(default=20, ge=0, description="wrong keys per window before an address gets 429; 0: off")
    gateway_auth_failure_window: float = Field(default=60.0, gt=0, le=86_400, description="seconds failures are counted and refused")
    gateway_auth_exempt_cidrs: str = Field(default="", description="comma-separated IPs/CIDRs never limited for failed keys")
    gateway_auth_max_addresses: int = Field(default=100_000, ge=1, description="addresses the failed-key limiter keeps")
    gateway_whatif_max_events: int = Field(default=1_000_000, ge=1, le=100_000_000,
                                           description="recorded events one POST /whatif may decide again")
    gateway_whatif_max_range: float = Field(default=86_400.0, gt=0, le=366 * 86_400,
                                            description="seconds of event time one POST /whatif may cover")
    gateway_whatif_read_timeout: float = Field(default=60.0, gt=0, le=3_600,
                                               description="seconds POST /whatif may take to read the topics")


class RlsSettings(Section):
    """Envoy's rate limit service (gRPC ``ShouldRateLimit`` and ``POST /json``) served by the gateway."""

    rls_enabled: bool = Field(default=True, description="this worker counts descriptor hits (the rls role)")
    rls_grpc_port: int | None = Field(default=None, ge=0, le=65_535, description="gRPC port of the gateway; unset: none")
    rls_grpc_host: str = "127.0.0.1"
    rls_tls_cert_file: Path | None = Field(default=None, description="server certificate (PEM): gRPC over TLS")
    rls_tls_key_file: Path | None = None
    rls_client_ca_file: Path | None = Field(default=None, description="CA of client certificates: mTLS authenticates")
    rls_decision_timeout: float = Field(default=2.0, gt=0, le=60, description="seconds to wait for every descriptor")
    rls_fail_mode: Literal["open", "closed"] = Field(default="open", description="no answer in time: OK or OVER_LIMIT")
    rls_max_descriptors: int = Field(default=64, ge=1, le=1_024, description="descriptors per call")
    rls_max_entries: int = Field(default=16, ge=1, le=256, description="entries per descriptor")
    rls_max_entry_bytes: int = Field(default=1_024, ge=16, le=65_536, description="bytes of one entry's key or value")
    rls_max_hits_addend: int = Field(default=1_000_000, ge=1, description="hits one call may count")


class ConsoleSettings(Section):
    """The gateway's web console (docs/console.md): sessions signed with a secret, their lifetime."""

    console_enabled: bool = Field(default=True, description="serve the web console under /console")
    console_secret: SecretStr | None = Field(
        default=None, description="key that signs session cookies and CSRF tokens; unset: one generated per "
                                  "process start (sessions then end when the gateway restarts)")
    console_session_max_age: float = Field(default=8 * 3600.0, ge=60, le=30 * 86_400,
                                           description="seconds a console login lasts")
