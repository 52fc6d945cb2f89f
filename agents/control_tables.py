"""The limiter's control tables: the ``rate-limits`` and ``blocklist`` topics read into a
:class:`agents.rules.LimitBook` and a :class:`agents.rules.Blocklist` through a
:class:`streams.tables.ControlTable` (the worker and the gateway both keep them)."""

import msgspec

from agents.descriptor_rules import RuleBook
from agents.rules import Blocklist, LimitBook
from schemas.descriptors import RULES_KEY_PREFIX, RulesDocument
from schemas.limits import BlocklistEntry, RateLimit
from streams.settings import Settings
from streams.tables import ControlTable

__all__ = ["limits_table", "blocklist_table"]


def limits_table(settings: Settings, book: LimitBook, rules: RuleBook | None = None) -> ControlTable:
    """The limits topic: per-user limits into ``book``; descriptor rules documents (keys ``domain:<d>``)
    into ``rules`` (the gateway's rate limit service), skipped by readers without one (the workers)."""
    decode = msgspec.json.Decoder(RateLimit).decode
    decode_rules = msgspec.json.Decoder(RulesDocument).decode

    def apply(key: bytes, value: bytes | None) -> None:
        name = key.decode()
        if name.startswith(RULES_KEY_PREFIX):
            if rules is not None:
                domain = name[len(RULES_KEY_PREFIX):]
                rules.put(domain, None if value is None else decode_rules(value))  # RuleBook logs it
            return
        book.put(name, None if value is None else decode(value))

    return ControlTable(settings, settings.limits_topic, apply)


def blocklist_table(settings: Settings, blocklist: Blocklist) -> ControlTable:
    decode = msgspec.json.Decoder(BlocklistEntry).decode

    def apply(key: bytes, value: bytes | None) -> None:
        kind, _, subject = key.decode().partition(":")
        blocklist.put(kind, subject, None if value is None else decode(value))

    return ControlTable(settings, settings.blocklist_topic, apply)
