"""The limiter's control tables: the ``rate-limits`` and ``blocklist`` topics read into a
:class:`agents.rules.LimitBook` and a :class:`agents.blocklist_entries.Blocklist` through a
:class:`streams.tables.ControlTable` (the worker and the gateway both keep them); and the analytics'
``allowlist`` topic read into an :class:`agents.allowlist.Allowlist` (the analytics and the gateway)."""

import logging

import msgspec

from agents.allowlist import Allowlist
from agents.ban_gate import BanGate
from agents.ban_horizon import is_horizon_key
from agents.blocklist_entries import Blocklist
from agents.descriptor_rules import RuleBook
from agents.event_rules import EVENTS_DOMAIN
from agents.rules import LimitBook, limit_key
from schemas.allowlist import AllowlistEntry
from schemas.descriptors import RULES_KEY_PREFIX, RulesDocument
from schemas.limits import MEMBER_KEY_PREFIX, TIER_KEY_PREFIX, BlocklistEntry, RateLimit, TierLimit, TierMembership
from streams.metrics import ANALYTICS_BAD_RECORDS
from streams.settings import Settings
from streams.tables import ControlTable

__all__ = ["allowlist_table", "limits_table", "blocklist_table"]

logger = logging.getLogger(__name__)


def limits_table(settings: Settings, book: LimitBook, rules: RuleBook | None = None) -> ControlTable:
    """The limits topic, routed by key prefix: per-user limits (no prefix) into ``book``, tiers' limits
    (``tier:<name>[\\x1ftype]``) and memberships (``member:<user>``) too; descriptor rules documents
    (``domain:<d>``) into ``rules`` (the gateway's rate limit service), skipped by readers without one
    (the workers), and the ``ratewarden`` domain's (the request stream's limits) into ``book`` too. A
    record that does not decode, or a tier record under another's key, is logged and skipped by the table."""
    decode = msgspec.json.Decoder(RateLimit).decode
    decode_tier = msgspec.json.Decoder(TierLimit).decode
    decode_member = msgspec.json.Decoder(TierMembership).decode
    decode_rules = msgspec.json.Decoder(RulesDocument).decode

    def apply(key: bytes, value: bytes | None) -> None:
        name = key.decode()
        if name.startswith(RULES_KEY_PREFIX):
            domain = name[len(RULES_KEY_PREFIX):]
            document = None if value is None else decode_rules(value)
            if domain == EVENTS_DOMAIN:  # the request stream's rules: every reader's book
                book.put_document(document)
            if rules is not None:
                rules.put(domain, document)  # RuleBook logs it
        elif name.startswith(TIER_KEY_PREFIX):
            tier_key, limit = name[len(TIER_KEY_PREFIX):], None if value is None else decode_tier(value)
            if limit is not None and limit_key(limit.tier, limit.request_type) != tier_key:
                raise ValueError(f"tier limit {limit} under another key, {name!r}")
            book.put_tier(tier_key, limit)
        elif name.startswith(MEMBER_KEY_PREFIX):
            user_id, member = name[len(MEMBER_KEY_PREFIX):], None if value is None else decode_member(value)
            if member is not None and member.user_id != user_id:
                raise ValueError(f"membership {member} under another key, {name!r}")
            book.put_member(user_id, None if member is None else member.tier)
        else:
            book.put(name, None if value is None else decode(value))

    return ControlTable(settings, settings.limits_topic, apply)


def blocklist_table(settings: Settings, blocklist: Blocklist, gate: BanGate | None = None) -> ControlTable:
    """The blocklist topic: entries into ``blocklist``; the analytics' ban horizons (``horizon:<p>``) into
    ``gate`` (the limiter's), skipped by readers without one (the gateway)."""
    decode = msgspec.json.Decoder(BlocklistEntry).decode

    def apply(key: bytes, value: bytes | None) -> None:
        name = key.decode()
        if is_horizon_key(name):
            if gate is not None:
                gate.put(value)
            return
        kind, _, subject = name.partition(":")
        blocklist.put(kind, subject, None if value is None else decode(value))

    return ControlTable(settings, settings.blocklist_topic, apply)


def allowlist_table(settings: Settings, allowlist: Allowlist) -> ControlTable:
    """The allow-list topic into ``allowlist``. A record that does not decode, or whose key is not its
    network's normalised CIDR, is logged, counted (``allowlist.rejected`` and
    ``ratewarden_analytics_bad_records_total{topic=<allowlist topic>}``) and skipped."""
    decode = msgspec.json.Decoder(AllowlistEntry).decode

    def apply(key: bytes | None, value: bytes | None) -> None:
        try:
            allowlist.put(key.decode(), None if value is None else decode(value))
        except (AttributeError, msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
            allowlist.rejected += 1
            ANALYTICS_BAD_RECORDS.labels(settings.allowlist_topic).inc()
            logger.warning("allow-list: skipping bad record %r on %s: %s", key, settings.allowlist_topic, exc)

    return ControlTable(settings, settings.allowlist_topic, apply)
