"""The limiter's control tables: the ``rate-limits`` and ``blocklist`` topics read into a
:class:`agents.rules.LimitBook` and a :class:`agents.rules.Blocklist` through a
:class:`streams.tables.ControlTable` (the worker and the gateway both keep them)."""

import msgspec

from agents.rules import Blocklist, LimitBook
from schemas.limits import BlocklistEntry, RateLimit
from streams.settings import Settings
from streams.tables import ControlTable

__all__ = ["limits_table", "blocklist_table"]


def limits_table(settings: Settings, book: LimitBook) -> ControlTable:
    decode = msgspec.json.Decoder(RateLimit).decode

    def apply(key: bytes, value: bytes | None) -> None:
        book.put(key.decode(), None if value is None else decode(value))

    return ControlTable(settings, settings.limits_topic, apply)


def blocklist_table(settings: Settings, blocklist: Blocklist) -> ControlTable:
    decode = msgspec.json.Decoder(BlocklistEntry).decode

    def apply(key: bytes, value: bytes | None) -> None:
        kind, _, subject = key.decode().partition(":")
        blocklist.put(kind, subject, None if value is None else decode(value))

    return ControlTable(settings, settings.blocklist_topic, apply)
