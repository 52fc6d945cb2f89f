"""Limits of ``ratewarden whatif``, ``advise`` and ``POST /whatif``: in force (a file, or the rate-limits topic)
and a candidate (a limits document, changes to one user or tier in the ``--set`` syntax, a default).

Every parser names the file and line, or the spec, of a bad limit (``ValueError``: exit status 2 in the
CLI, 422 in the gateway).
"""

import logging
from pathlib import Path
from typing import Iterable, Sequence

import msgspec

from agents.event_rules import EVENTS_DOMAIN
from agents.rules import LimitBook, limit_key
from agents.rules_file import load_rules
from schemas.descriptors import RulesDocument
from schemas.limits import ALGORITHMS, RateLimit, TierLimit, check_tier_name

__all__ = ["candidate_book", "convert_limits", "default_limit", "limits_in_force", "new_book", "parse_default",
           "parse_set", "parse_tier_set", "put_limits", "read_limits_file", "read_stream_rules",
           "stream_rules"]

logger = logging.getLogger(__name__)


def read_limits_file(path: Path) -> list[RateLimit]:
    """RateLimit records as a JSON array or JSON lines (what ``ratewarden limits list --json`` prints)."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"["):
        try:
            items = msgspec.json.decode(data)
        except msgspec.MsgspecError as exc:
            raise ValueError(f"{path}: not a JSON array: {exc}") from None
        where = [f"{path}: item {i}" for i in range(len(items))]
    else:
        lines = [(n, line) for n, line in enumerate(data.splitlines(), 1) if line.strip()]
        items, where = [], []
        for number, line in lines:
            try:
                items.append(msgspec.json.decode(line))
            except msgspec.MsgspecError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
            where.append(f"{path}:{number}")
    return convert_limits(items, where)


def convert_limits(items: Sequence, where: Sequence[str]) -> list[RateLimit]:
    """Decoded JSON objects as RateLimit records; a bad one raises ValueError naming its place in ``where``."""
    limits = []
    for item, place in zip(items, where):
        try:
            limits.append(msgspec.convert(item, RateLimit))
        except msgspec.MsgspecError as exc:
            raise ValueError(f"{place}: not a rate limit: {exc}") from None
    return limits


def _rate(spec: str, text: str, parts_max: int) -> list[str]:
    parts = text.split("/")
    if not 2 <= len(parts) <= parts_max:
        shape = "USER[:TYPE]=LIMIT/WINDOW[/ALGORITHM[/BURST]]" if parts_max == 4 else "LIMIT/WINDOW[/ALGORITHM]"
        raise ValueError(f"{spec!r}: expected {shape}")
    if len(parts) > 2 and parts[2] not in ALGORITHMS:
        raise ValueError(f"{spec!r}: unknown algorithm {parts[2]!r}; known: {', '.join(ALGORITHMS)}")
    return parts


def _convert(spec: str, fields: dict, kind: type = RateLimit):
    try:
        return msgspec.convert(fields, kind, strict=False)
    except msgspec.MsgspecError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None


def parse_set(spec: str) -> RateLimit:
    """``USER[:TYPE]=LIMIT/WINDOW[/ALGORITHM[/BURST]]`` (split at the last ':' and the last '=')."""
    who, equals, rate = spec.rpartition("=")
    if not equals or not who:
        raise ValueError(f"{spec!r}: expected USER[:TYPE]=LIMIT/WINDOW[/ALGORITHM[/BURST]]")
    user, colon, request_type = who.rpartition(":")
    if not colon:
        user, request_type = who, None
    parts = _rate(spec, rate, 4)
    fields = {"user_id": user, "request_type": request_type, "limit": parts[0], "window": parts[1]}
    if len(parts) > 2:
        fields["algorithm"] = parts[2]
    if len(parts) > 3:
        fields["burst"] = parts[3]
    return _convert(spec, fields)


def parse_tier_set(spec: str) -> TierLimit:
    """``TIER[:TYPE]=LIMIT/WINDOW[/ALGORITHM[/BURST]]``: a candidate limit of one tier (of one request type)."""
    limit = parse_set(spec)
    try:
        check_tier_name(limit.user_id)
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None
    fields = msgspec.structs.asdict(limit)
    fields["tier"] = fields.pop("user_id")
    return _convert(spec, fields, TierLimit)


def parse_default(spec: str) -> RateLimit:
    """``LIMIT/WINDOW[/ALGORITHM]``: the candidate default limit."""
    parts = _rate(spec, spec, 3)
    return _convert(spec, {"user_id": "*", "limit": parts[0], "window": parts[1],
                           "algorithm": parts[2] if len(parts) > 2 else "fixed"})


def new_book(default: RateLimit, limits: list[RateLimit] = (), changes: list[RateLimit] = ()) -> LimitBook:
    """A LimitBook with ``default`` and ``limits``, then ``changes`` over them (the same key replaced)."""
    book = LimitBook(default.limit, default.window, default.algorithm)
    put_limits(book, [*limits, *changes])
    return book


def put_limits(book: LimitBook, limits: Iterable[RateLimit]) -> None:
    for limit in limits:
        book.put(limit_key(limit.user_id, limit.request_type), limit)


def candidate_book(book: LimitBook, limits: list[RateLimit] | None = None, changes: Iterable[RateLimit] = (),
                   tier_changes: Iterable[TierLimit] = (), document: RulesDocument | None = None) -> LimitBook:
    """``book`` (the limits in force) turned into a candidate, in place: the users' own limits replaced by
    ``limits`` when given (tiers kept), then ``changes`` and ``tier_changes`` over them, and ``document`` (the
    ``ratewarden`` domain's rules) in place of the one in force when given. A tier changed must be in force
    (limits or members): else ValueError, as a misspelt name would change nothing."""
    tiers = book.tiers()
    tier_changes = list(tier_changes)
    for tier in tier_changes:
        if tier.tier not in tiers:
            known = ", ".join(tiers) or "none"
            raise ValueError(f"unknown tier {tier.tier!r}: no limits or members in force (tiers: {known})")
    if limits is not None:
        for limit in book:
            book.put(limit_key(limit.user_id, limit.request_type), None)
        put_limits(book, limits)
    put_limits(book, changes)
    for tier in tier_changes:
        book.put_tier(limit_key(tier.tier, tier.request_type), tier)
    if document is not None:
        book.put_document(document)
    return book


def read_stream_rules(path: Path) -> RulesDocument:
    """The ``ratewarden`` domain's rules of the rules file ``path``, checked as ``limits load`` checks it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    return stream_rules(text, str(path))


def stream_rules(text: str, source: str) -> RulesDocument:
    """The ``ratewarden`` domain's rules of a rules file's ``text`` (ValueError naming every error's line)."""
    for document in load_rules(text, source=source):
        if document.domain == EVENTS_DOMAIN:
            return document
    raise ValueError(f"{source}: no rules for the {EVENTS_DOMAIN} domain (the request stream's)")


def limits_in_force(settings, book: LimitBook, deadline: float | None = None) -> LimitBook:
    """Every record of the rate-limits topic applied to ``book`` as the worker applies it
    (``agents.control_tables.limits_table``), so whatever the worker reads there counts here too.
    ``deadline``: ``time.monotonic()`` by which the read must end (TimeoutError after it)."""
    from agents.control_tables import limits_table
    from ratewarden.client import read_topic_records

    from kafka.errors import KafkaError

    apply = limits_table(settings, book)._apply  # the worker's own routing of the topic's keys
    try:
        records = read_topic_records(settings, settings.limits_topic, deadline=deadline)
    except KafkaError as exc:
        raise RuntimeError(f"cannot read the limits in force from {settings.limits_topic} ({exc}); "
                           "give them with --in-force FILE (`ratewarden limits list --json`)") from None
    for record in records:
        try:
            apply(record.key, record.value)
        except (msgspec.MsgspecError, UnicodeDecodeError, ValueError) as exc:  # the worker skips it too
            logger.warning("skipping bad record at %s@%d: %s", settings.limits_topic, record.offset, exc)
    return book


def default_limit(spec: str | None, settings) -> RateLimit:
    """``--default LIMIT/WINDOW[/ALGORITHM]``, else the default the workers use (``RATEWARDEN_DEFAULT_*``)."""
    if spec:
        return parse_default(spec)
    return RateLimit(user_id="*", limit=settings.default_limit, window=settings.default_window,
                     algorithm=settings.default_algorithm)
