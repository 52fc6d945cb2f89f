"""Inputs of ``ratewarden whatif``, ``advise`` and ``POST /whatif``: recorded traffic (files or topics).

Every reader names the file and line of a bad record (``ValueError``, which the CLI turns into one
line and exit status 2). The limits (in force and candidate) are read by ``ratewarden.whatif_limits``,
whose names are also importable from here.
"""

import logging
import math
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import msgspec

from agents.ban_horizon import only_flags
from agents.whatif import INPUT_REASONS
from ratewarden.replay import read_trace
from ratewarden.whatif_limits import (  # noqa: F401 (re-exported: the limits' readers lived here first)
    default_limit, limits_in_force, new_book, parse_default, parse_set, put_limits, read_limits_file,
)
from schemas.events import RequestEvent

__all__ = ["Recorded", "TooManyEvents", "add_recorded_arguments", "default_limit", "from_files", "from_topics",
           "limits_in_force", "new_book", "parse_default", "parse_set", "parse_time", "put_limits", "read_jsonl",
           "read_limits_file", "recorded_source"]

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
    block reasons and address refusals by request_id, flagged subjects, and how many events had no decision."""

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
    blocks = {d.request_id: d.reason for d in rows if d.reason in INPUT_REASONS}
    flagged = sorted({f.ip for f in flags if not f.allowlisted})
    return Recorded(kept, [d.verdict for d in rows], [d.reason for d in rows], blocks, flagged,
                    len(events) - len(kept))


def from_files(trace: Path, decisions: Path, flags: Path | None) -> Recorded:
    events = read_trace(trace)
    if not events:
        raise ValueError(f"{trace}: no events")
    return _join(events, read_jsonl(decisions, _Decided, "decision"),
                 read_jsonl(flags, _Flag, "flag", only_flags(Path(flags).read_bytes().splitlines())) if flags else [])


class TooManyEvents(ValueError):
    """More events in the time range than the reader may take (``max_events``)."""


def from_topics(settings, since: float | None, until: float | None, max_events: int | None = None,
                timeout: float | None = None) -> Recorded:
    """The requests (in each partition's order), decisions and ip-flags topics, events in [since, until).

    ``max_events``: more events in the range raise :class:`TooManyEvents`; ``timeout``: seconds the reads
    of the three topics may take together (TimeoutError after them)."""
    from ratewarden.reports import read_topic

    deadline = None if timeout is None else time.monotonic() + timeout
    lo, hi = -math.inf if since is None else since, math.inf if until is None else until
    decode = msgspec.json.Decoder(RequestEvent).decode
    events, unreadable = [], 0
    for value in read_topic(settings, settings.requests_topic, deadline=deadline):
        try:
            event = decode(value)
        except msgspec.MsgspecError:  # dead-lettered by the limiter: no decision
            unreadable += 1
            continue
        if lo <= event.ts < hi:
            events.append(event)
            if max_events is not None and len(events) > max_events:
                raise TooManyEvents(f"more than {max_events:,} events in the time range; at most {max_events:,}")
    if not events:
        raise ValueError(f"no requests on {settings.requests_topic} in the time range")
    decided = read_jsonl(settings.decisions_topic, _Decided, "decision",
                         read_topic(settings, settings.decisions_topic, deadline=deadline))
    flags = read_jsonl(settings.ip_flags_topic, _Flag, "flag",
                       only_flags(read_topic(settings, settings.ip_flags_topic, deadline=deadline)))
    recorded = _join(events, decided, flags)
    return recorded._replace(unrecorded=recorded.unrecorded + unreadable)


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
