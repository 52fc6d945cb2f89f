"""The topics, created idempotently with the partition counts the hot path relies on.

``requests``, ``decisions``, the dead-letter topic and the windows changelog are co-partitioned
(same count, same key): the limiter writes the decisions and changelog of input partition ``p`` to
partition ``p``. Control topics (limits, blocklist) are compacted. The analytics topics (``ip-features``,
``ip-flags``: keyed by IP; ``abuse-reports``: one partition, a timeline) are described in
docs/analytics.md.
"""

import logging

from kafka import KafkaAdminClient

from streams.kafka_config import kafka_python_options, resolve_bootstrap
from streams.settings import Settings

__all__ = ["TopicSpec", "TopicsError", "topic_specs", "ensure_topics", "require_topics"]

logger = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
#: A routed reply is read within the gateway's decision timeout or never: an hour is plenty.
REPLIES = {"retention.ms": "3600000"}


class TopicSpec:
    def __init__(self, name: str, partitions: int, config: dict[str, str] | None = None) -> None:
        self.name, self.partitions, self.config = name, partitions, config or {}


def topic_specs(settings: Settings) -> list[TopicSpec]:
    n = settings.partitions
    return [
        TopicSpec(settings.requests_topic, n),
        TopicSpec(settings.decisions_topic, n),
        TopicSpec(settings.dead_letter_topic, n),
        TopicSpec(settings.changelog_topic, n, COMPACTED),
        TopicSpec(settings.limits_topic, 1, COMPACTED),
        TopicSpec(settings.blocklist_topic, 1, COMPACTED),
        TopicSpec(settings.ban_offences_topic, 1, COMPACTED),  # the last automatic ban per IP (repeat offenders)
        TopicSpec(settings.users_topic, 1, COMPACTED),  # API users and key hashes (the gateway)
        TopicSpec(settings.history_owners_topic, 1, COMPACTED),  # partition -> worker serving its history
        TopicSpec(settings.ip_features_topic, n),  # abuse analytics, keyed by IP (docs/analytics.md)
        TopicSpec(settings.ip_flags_topic, n),
        TopicSpec(settings.abuse_reports_topic, 1),
        TopicSpec(settings.replies_topic, settings.replies_partitions, REPLIES),  # decisions routed to gateways
        # Envoy's rate limit service: descriptor hits keyed by counter, their answers and counters (co-partitioned)
        TopicSpec(settings.rls_hits_topic, n),
        TopicSpec(settings.rls_decisions_topic, n),
        TopicSpec(settings.rls_changelog_topic, n, COMPACTED),
        TopicSpec(settings.advice_topic, 1, COMPACTED),  # the latest limit advice per tier and user (GET /advice)
        TopicSpec(settings.allowlist_topic, 1, COMPACTED),  # the runtime allow-list, keyed by CIDR (docs/analytics.md)
    ]


class TopicsError(RuntimeError):
    """Topics missing or wrongly partitioned: the message says what to run. Commands exit with status 1."""

    exit_status = 1


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics (several processes may race to); fail clearly when a co-partitioned one has the wrong count.

    Brokers should not auto-create topics (the local one does not): a topic created by a producer's
    first send gets the broker's default partition count, and the limiter cannot use it.
    """
    bootstrap = resolve_bootstrap(settings)
    admin = _admin(settings, bootstrap)
    try:
        specs = topic_specs(settings)
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            result = admin.create_topics(
                {s.name: {"num_partitions": s.partitions, "replication_factor": settings.replication_factor,
                          "configs": s.config} for s in missing},
                raise_errors=False, wait_for_metadata=True,
            )
            created = [t["name"] for t in result["topics"] if t["error_code"] == 0]
            if created:
                logger.info("created topics %s", created)
        counts = _partition_counts(admin, [s.name for s in specs])
    finally:
        admin.close()
    absent = [s.name for s in specs if not counts.get(s.name)]
    if absent:
        raise TopicsError(f"topics {absent} could not be created on {bootstrap}: check the broker's log")
    _check_copartitioned(settings, counts)
    return counts


def require_topics(settings: Settings, names: list[str]) -> dict[str, int]:
    """Check, without creating anything, that ``names`` exist with the partitions the worker expects."""
    bootstrap = resolve_bootstrap(settings)
    admin = _admin(settings, bootstrap)
    try:
        existing = set(admin.list_topics())
        absent = [name for name in names if name not in existing]
        counts = _partition_counts(admin, [name for name in names if name in existing]) if len(absent) < len(names) else {}
    finally:
        admin.close()
    if absent:
        raise TopicsError(
            f"topic {absent[0]} does not exist on {bootstrap}: run `ratewarden topics` "
            "(or start `ratewarden worker`, which creates them) first"
        )
    _check_copartitioned(settings, counts)
    return counts


def _admin(settings: Settings, bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_python_options(settings))


def _check_copartitioned(settings: Settings, counts: dict[str, int]) -> None:
    for spec in topic_specs(settings)[:4]:
        found = counts.get(spec.name)
        if found is not None and found != settings.partitions:
            raise TopicsError(
                f"topic {spec.name} has {found} partitions, expected {settings.partitions} (requests, decisions, "
                "dead letters and the changelog must be co-partitioned): delete and recreate it with "
                f"`ratewarden topics`, or set RATEWARDEN_PARTITIONS={found}"
            )


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    return {t.get("name", t.get("topic")): len(t["partitions"]) for t in admin.describe_topics(names)}
