"""The topics, created idempotently with the partition counts the hot path relies on.

``requests``, ``decisions``, the dead-letter topic and the windows changelog are co-partitioned
(same count, same key): the limiter writes the decisions and changelog of input partition ``p`` to
partition ``p``. Control topics (limits, blocklist) are compacted. The analytics topics (``ip-features``,
``ip-flags``: keyed by IP; ``abuse-reports``: one partition, a timeline) are described in
docs/analytics.md.
"""

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.kafka_config import kafka_python_options, resolve_bootstrap
from streams.settings import Settings

__all__ = ["TopicSpec", "topic_specs", "ensure_topics"]

logger = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}


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
        TopicSpec(settings.users_topic, 1, COMPACTED),  # API users and key hashes (the gateway)
        TopicSpec(settings.history_owners_topic, 1, COMPACTED),  # partition -> worker serving its history
        TopicSpec(settings.ip_features_topic, n),  # abuse analytics, keyed by IP (docs/analytics.md)
        TopicSpec(settings.ip_flags_topic, n),
        TopicSpec(settings.abuse_reports_topic, 1),
    ]


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics; fail clearly when a co-partitioned topic has the wrong count."""
    admin = KafkaAdminClient(bootstrap_servers=resolve_bootstrap(settings), **kafka_python_options(settings))
    try:
        specs = topic_specs(settings)
        existing = set(admin.list_topics())
        missing = [
            NewTopic(s.name, s.partitions, settings.replication_factor, topic_configs=s.config)
            for s in specs
            if s.name not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            logger.info("created topics %s", [t.name for t in missing])
        counts = _partition_counts(admin, [s.name for s in specs])
        deadline = time.monotonic() + 15.0
        while missing and not all(counts.values()) and time.monotonic() < deadline:
            time.sleep(0.1)  # a topic just created may report no partitions until metadata settles
            counts = _partition_counts(admin, [s.name for s in specs])
    finally:
        admin.close()
    for spec in specs[:4]:
        if counts.get(spec.name) != settings.partitions:
            raise RuntimeError(
                f"topic {spec.name} has {counts.get(spec.name)} partitions, expected {settings.partitions}: "
                "requests, decisions, dead letters and the changelog must be co-partitioned"
            )
    return counts


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    return {t.get("name", t.get("topic")): len(t["partitions"]) for t in admin.describe_topics(names)}
