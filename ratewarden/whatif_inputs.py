"""Inputs of ``ratewarden whatif`` and ``advise``: recorded traffic (files or topics), limits (in force and candidate).

Every reader names the file and line of a bad record (``ValueError``, which the CLI turns into one
line and exit status 2).
"""

import logging
import math
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import msgspec

from agents.rules import LimitBook, limit_key
from agents.whatif import BLOCK_REASONS
from ratewarden.replay import read_trace
from schemas.events import RequestEvent
from schemas.limits import ALGORITHMS, RateLimit

__all__ = ["Recorded", "add_recorded_arguments", "default_limit", "from_files", "from_topics", "limits_in_force",
           "new_book", "parse_default", "parse_set", "parse_time", "put_limits", "read_jsonl", "read_limits_file",
           "recorded_source"]

logger = logging.getLogger(__name__)


class _Decided(msgspec.Struct):
    """The fields of a recorded ``schemas.decisions.Decision`` the what-if needs."""

    request_id: str
    verdict: str
    reason: str


class _Flag(msgspec.Struct):
    """The fields of a ``schemas.flags.IpFlag`` the what-if needs."""

    ip: str
    allowlisted: bool = False


class Recorded(NamedTuple):
    """The events that have a recorded decision (in order), that decision's verdicts and reasons, the
    block reasons by request_id, flagged subjects, and how many events had no decision."""

    events: list[RequestEvent]
    verdicts: list[str]
    reasons: list[str]
    blocks: dict[str, str]
    flagged: list[str]
    unrecorded: int


def read_jsonl(path: Path, kind: type, what: str, values: list[bytes] | None = None) -> list:
    """Decode JSON lines (of a file, or ``values``) as ``kind``; a bad one raises ValueError with its line."""
    data = Path(path).read_bytes() if values is None else b"\n".join(values)
    try:
        return msgspec.json.Decoder(kind).decode_lines(data)
    except msgspec.MsgspecError:
        pass  # find the line, for the message
    decode = msgspec.json.Decoder(kind).decode
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            try:
                decode(line)
            except msgspec.MsgspecError as exc:
                raise ValueError(f"{path}:{number}: not a {what}: {exc}") from None
    raise ValueError(f"{path}: not JSON lines of {what}s")


def _join(events: list[RequestEvent], decided: list[_Decided], flags: list[_Flag]) -> Recorded:
    recorded = {d.request_id: d for d in decided}  # at least once: a repeat has the same verdict
    kept = [e for e in events if e.request_id in recorded]
    rows = [recorded[e.request_id] for e in kept]
    blocks = {d.request_id: d.reason for d in rows if d.reason in BLOCK_REASONS}
    flagged = sorted({f.ip for f in flags if not f.allowlisted})
    return Recorded(kept, [d.verdict for d in rows], [d.reason for d in rows], blocks, flagged,
                    len(events) - len(kept))


def from_files(trace: Path, decisions: Path, flags: Path | None) -> Recorded:
    events = read_trace(trace)
    if not events:
        raise ValueError(f"{trace}: no events")
    return _join(events, read_jsonl(decisions, _Decided, "decision"),
                 read_jsonl(flags, _Flag, "flag") if flags else [])


def from_topics(settings, since: float | None, until: float | None) -> Recorded:
    """The requests (in each partition's order), decisions and ip-flags topics, events in [since, until)."""
    from ratewarden.reports import read_topic

    lo, hi = -math.inf if since is None else since, math.inf if until is None else until
    decode = msgspec.json.Decoder(RequestEvent).decode
    events, unreadable = [], 0
    for value in read_topic(settings, settings.requests_topic):
        try:
            event = decode(value)
        except msgspec.MsgspecError:  # dead-lettered by the limiter: no decision
            unreadable += 1
            continue
        if lo <= event.ts < hi:
            events.append(event)
    if not events:
        raise ValueError(f"no requests on {settings.requests_topic} in the time range")
    decided = read_jsonl(settings.decisions_topic, _Decided, "decision", read_topic(settings, settings.decisions_topic))
    flags = read_jsonl(settings.ip_flags_topic, _Flag, "flag", read_topic(settings, settings.ip_flags_topic))
    recorded = _join(events, decided, flags)
    return recorded._replace(unrecorded=recorded.unrecorded + unreadable)


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


def _convert(spec: str, fields: dict) -> RateLimit:
    try:
        return msgspec.convert(fields, RateLimit, strict=False)
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


def parse_default(spec: str) -> RateLimit:
    """``LIMIT/WINDOW[/ALGORITHM]``: the candidate default limit."""
    parts = _rate(spec, spec, 3)
    return _convert(spec, {"user_id": "*", "limit": parts[0], "window": parts[1],
                           "algorithm": parts[2] if len(parts) > 2 else "fixed"})


def parse_time(text: str) -> float:
    """Seconds since the epoch, or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: not a time (epoch seconds or ISO 8601)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def new_book(default: RateLimit, limits: list[RateLimit] = (), changes: list[RateLimit] = ()) -> LimitBook:
    """A LimitBook with ``default`` and ``limits``, then ``changes`` over them (the same key replaced)."""
    book = LimitBook(default.limit, default.window, default.algorithm)
    put_limits(book, [*limits, *changes])
    return book


def put_limits(book: LimitBook, limits: list[RateLimit]) -> None:
    for limit in limits:
        book.put(limit_key(limit.user_id, limit.request_type), limit)


def limits_in_force(settings, book: LimitBook) -> LimitBook:
    """Every record of the rate-limits topic applied to ``book`` as the worker applies it
    (``agents.control_tables.limits_table``), so whatever the worker reads there counts here too."""
    from agents.control_tables import limits_table
    from ratewarden.client import read_topic_records

    from kafka.errors import KafkaError

    apply = limits_table(settings, book)._apply  # the worker's own routing of the topic's keys
    try:
        records = read_topic_records(settings, settings.limits_topic)
    except KafkaError as exc:
        raise RuntimeError(f"cannot read the limits in force from {settings.limits_topic} ({exc}); "
                           "give them with --in-force FILE (`ratewarden limits list --json`)") from None
    for record in records:
        try:
            apply(record.key, record.value)
        except (msgspec.MsgspecError, UnicodeDecodeError, ValueError) as exc:  # the worker skips it too
            logger.warning("skipping bad record at %s@%d: %s", settings.limits_topic, record.offset, exc)
    return book


def add_recorded_arguments(parser, flags_help: str) -> None:
    """The options that say where the recorded traffic is (``whatif`` and ``advise`` read it alike)."""
    parser.add_argument("--trace", help="the requests (JSON lines of RequestEvent, as `replay` reads)")
    parser.add_argument("--decisions", help="their recorded decisions (JSON lines, as `replay --out` writes)")
    parser.add_argument("--flags", help=flags_help)
    parser.add_argument("--from-topics", action="store_true", help="read the requests, decisions and ip-flags topics")
    parser.add_argument("--since", help="--from-topics: events from this time (epoch seconds or ISO 8601, UTC)")
    parser.add_argument("--until", help="--from-topics: events before this time")


def recorded_source(args, settings) -> Callable[[], Recorded]:
    """The reader of the recorded traffic the options name (checked: a ValueError says what is wrong)."""
    if args.from_topics == bool(args.trace or args.decisions):
        raise ValueError("give --trace FILE and --decisions FILE (and --flags FILE), or --from-topics")
    if not args.from_topics and not (args.trace and args.decisions):
        raise ValueError("--trace and --decisions go together")
    if (args.since or args.until) and not args.from_topics:
        raise ValueError("--since and --until go with --from-topics")
    if args.from_topics:
        since, until = (parse_time(args.since) if args.since else None), (parse_time(args.until) if args.until else None)
        return partial(from_topics, settings, since, until)
    return partial(from_files, Path(args.trace), Path(args.decisions), Path(args.flags) if args.flags else None)


def default_limit(spec: str | None, settings) -> RateLimit:
    """``--default LIMIT/WINDOW[/ALGORITHM]``, else the default the workers use (``RATEWARDEN_DEFAULT_*``)."""
    if spec:
        return parse_default(spec)
    return RateLimit(user_id="*", limit=settings.default_limit, window=settings.default_window,
                     algorithm=settings.default_algorithm)
