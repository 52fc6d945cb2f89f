"""Writers for the compacted control topics: rate limits, tiers of limits, blocklist and allow-list entries.

Workers follow these topics live (``streams.tables``), so a write takes effect without a restart.
"""

import logging

import msgspec
from kafka import KafkaProducer

from agents.rules import limit_key, member_key, tier_key
from ratewarden.client import read_topic_records
from schemas.allowlist import AllowlistEntry
from schemas.descriptors import RULES_KEY_PREFIX, RulesDocument
from schemas.flags import HORIZON_KEY_PREFIX
from schemas.limits import MEMBER_KEY_PREFIX, TIER_KEY_PREFIX, BlocklistEntry, RateLimit, TierLimit, TierMembership
from streams.kafka_config import kafka_python_options, resolve_bootstrap
from streams.settings import Settings, get_settings
from streams.tables import blocklist_key
from streams.topics import ensure_topics

__all__ = ["set_limit", "set_limits", "delete_limit", "read_limits", "block", "unblock", "read_blocklist",
           "publish_rules", "read_rules", "delete_rules", "set_tier_limits", "delete_tier_limits", "assign_tier",
           "read_tiers", "publish_advice", "allow", "disallow", "read_allowlist"]

logger = logging.getLogger(__name__)


def _send(settings: Settings, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    """Send records and wait until the broker has every one of them (creating the topics if need be)."""
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=resolve_bootstrap(settings), acks="all", **kafka_python_options(settings))
    try:
        futures = [producer.send(topic, key=key.encode(), value=value) for key, value in records]
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def _read_all(settings: Settings, topic: str) -> dict[bytes, bytes]:
    """The latest value per key of a compacted topic (tombstones removed)."""
    latest: dict[bytes, bytes] = {}
    for record in read_topic_records(settings, topic):
        if record.value is None:
            latest.pop(record.key, None)
        else:
            latest[record.key] = record.value
    return latest


def set_limit(limit: RateLimit, settings: Settings | None = None) -> None:
    set_limits([limit], settings)


def set_limits(limits: list[RateLimit], settings: Settings | None = None) -> None:
    """ValueError for a user id whose key would be another kind of record (``tier:``, ``member:``, ``domain:``)."""
    for limit in limits:
        if limit.user_id.encode().startswith(_OTHER_PREFIXES):
            raise ValueError(f"user id {limit.user_id!r} cannot have a limit: its key would be read as another record")
    settings = settings or get_settings()
    records = [(limit_key(x.user_id, x.request_type), msgspec.json.encode(x)) for x in limits]
    _send(settings, settings.limits_topic, records)
    logger.info("%d limits set", len(records))


def delete_limit(user_id: str, request_type: str | None = None, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    _send(settings, settings.limits_topic, [(limit_key(user_id, request_type), None)])


#: Keys of the limits topic that are not a user's limit.
_OTHER_PREFIXES = tuple(p.encode() for p in (RULES_KEY_PREFIX, TIER_KEY_PREFIX, MEMBER_KEY_PREFIX))


def read_limits(settings: Settings | None = None) -> list[RateLimit]:
    """The users' own limits (not the tiers', not the descriptor rules)."""
    settings = settings or get_settings()
    decode = msgspec.json.Decoder(RateLimit).decode
    return [decode(value) for key, value in _read_all(settings, settings.limits_topic).items()
            if not key.startswith(_OTHER_PREFIXES)]


def set_tier_limits(limits: list[TierLimit], settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    _send(settings, settings.limits_topic,
          [(tier_key(x.tier, x.request_type), msgspec.json.encode(x)) for x in limits])


def delete_tier_limits(limits: list[TierLimit], settings: Settings | None = None) -> None:
    """Tombstone these limits of tiers (their members fall back to their own limits or the default)."""
    settings = settings or get_settings()
    _send(settings, settings.limits_topic, [(tier_key(x.tier, x.request_type), None) for x in limits])


def assign_tier(user_id: str, tier: str | None, settings: Settings | None = None) -> None:
    """Make ``user_id`` a member of ``tier``; ``None`` removes it from its tier (a tombstone)."""
    settings = settings or get_settings()
    value = None if tier is None else msgspec.json.encode(TierMembership(user_id=user_id, tier=tier))
    _send(settings, settings.limits_topic, [(member_key(user_id), value)])


def import_tiers(limits: list[TierLimit], members: list[TierMembership], settings: Settings | None = None) -> None:
    """Tiers' limits, then memberships, in one send (a member never arrives before its tier's limit)."""
    settings = settings or get_settings()
    records = [(tier_key(x.tier, x.request_type), msgspec.json.encode(x)) for x in limits]
    records += [(member_key(m.user_id), msgspec.json.encode(m)) for m in members]
    _send(settings, settings.limits_topic, records)


def read_tiers(settings: Settings | None = None) -> tuple[list[TierLimit], dict[str, str]]:
    """The tiers' limits, and every membership (user -> tier)."""
    settings = settings or get_settings()
    decode_tier, decode_member = msgspec.json.Decoder(TierLimit).decode, msgspec.json.Decoder(TierMembership).decode
    limits, members = [], {}
    for key, value in _read_all(settings, settings.limits_topic).items():
        if key.startswith(TIER_KEY_PREFIX.encode()):
            limits.append(decode_tier(value))
        elif key.startswith(MEMBER_KEY_PREFIX.encode()):
            member = decode_member(value)
            members[member.user_id] = member.tier
    return limits, members


def publish_rules(documents: list[RulesDocument], settings: Settings | None = None) -> None:
    """Publish validated descriptor rules documents (``agents.rules_file.load_rules``), one per domain;
    gateways apply each as it arrives, replacing that domain's rules whole."""
    settings = settings or get_settings()
    _send(settings, settings.limits_topic,
          [(RULES_KEY_PREFIX + doc.domain, msgspec.json.encode(doc)) for doc in documents])
    logger.info("descriptor rules of %d domains published", len(documents))


def delete_rules(domain: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    _send(settings, settings.limits_topic, [(RULES_KEY_PREFIX + domain, None)])


def read_rules(settings: Settings | None = None) -> list[RulesDocument]:
    settings = settings or get_settings()
    decode = msgspec.json.Decoder(RulesDocument).decode
    return [decode(value) for key, value in _read_all(settings, settings.limits_topic).items()
            if key.startswith(RULES_KEY_PREFIX.encode())]


def block(entry: BlocklistEntry, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    _send(settings, settings.blocklist_topic, [(blocklist_key(entry.kind, entry.subject), msgspec.json.encode(entry))])


def unblock(kind: str, subject: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    _send(settings, settings.blocklist_topic, [(blocklist_key(kind, subject), None)])


def read_blocklist(settings: Settings | None = None) -> list[BlocklistEntry]:
    settings = settings or get_settings()
    decode = msgspec.json.Decoder(BlocklistEntry).decode
    return [decode(value) for key, value in _read_all(settings, settings.blocklist_topic).items()
            if not key.startswith(HORIZON_KEY_PREFIX.encode())]  # the analytics' progress, not an entry


def publish_advice(records: list[tuple[str, bytes]], settings: Settings | None = None) -> None:
    """``ratewarden advise --publish``: the advice records (``schemas.advice``), in order, on the advice topic."""
    settings = settings or get_settings()
    _send(settings, settings.advice_topic, records)


def allow(entry: AllowlistEntry, settings: Settings | None = None) -> None:
    """Put ``entry`` on the allow-list topic, keyed by its network (normalised by the caller:
    ``agents.allowlist.allowlist_key``); the analytics workers follow it live."""
    settings = settings or get_settings()
    _send(settings, settings.allowlist_topic, [(entry.network, msgspec.json.encode(entry))])


def disallow(cidr: str, settings: Settings | None = None) -> None:
    """Tombstone the allow-list entry of the normalised ``cidr``."""
    settings = settings or get_settings()
    _send(settings, settings.allowlist_topic, [(cidr, None)])


def read_allowlist(settings: Settings | None = None) -> list[AllowlistEntry]:
    """The runtime entries (the topic's, not the static seed); a record that does not decode is logged and
    left out."""
    settings = settings or get_settings()
    decode, entries = msgspec.json.Decoder(AllowlistEntry).decode, []
    for key, value in sorted(_read_all(settings, settings.allowlist_topic).items()):
        try:
            entries.append(decode(value))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            logger.warning("allow-list: skipping bad record %r: %s", key, exc)
    return entries
