"""Replay a trace (JSON lines, in ts order) through the real pipeline and collect every decision.

A trace line is exactly ``{"request_id", "user_id", "ip", "request_type", "ts"}``, optionally with
``"status"`` (carried into the decision). The replay
publishes every line, waits until each ``request_id`` has its decision (first one wins: decisions
are at-least-once), and returns them in trace order.
"""

import logging
import time
from pathlib import Path
from typing import Iterable

import msgspec
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ratewarden.client import DecisionSubscriber, RequestPublisher
from schemas.decisions import Decision
from schemas.events import RequestEvent
from streams.settings import Settings, get_settings
from streams.topics import ensure_topics

__all__ = ["ReplayIncomplete", "read_trace", "write_trace", "replay", "write_decisions"]

logger = logging.getLogger(__name__)

_CHUNK = 5_000


class ReplayIncomplete(RuntimeError):
    """Not every request got its decision within the timeout."""

    def __init__(self, missing: list[str], total: int, timeout: float) -> None:
        self.missing = missing
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        super().__init__(
            f"{len(missing)} of {total} requests had no decision after {timeout:.0f} s without progress "
            f"(e.g. {shown}); is a worker running (`ratewarden worker`) on the same topics?"
        )


def read_trace(path: Path) -> list[RequestEvent]:
    """Parse a trace file; a bad line raises ValueError naming its line number."""
    decode = msgspec.json.Decoder(RequestEvent).decode
    events = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    events.append(decode(line))
                except msgspec.MsgspecError as exc:
                    raise ValueError(f"{path}:{number}: {exc}") from None
    return events


def write_trace(path: Path, events: Iterable[RequestEvent]) -> int:
    encode = msgspec.json.Encoder().encode
    n = 0
    with open(path, "wb") as handle:
        for event in events:
            handle.write(encode(event) + b"\n")
            n += 1
    return n


def write_decisions(path: Path, decisions: Iterable[Decision]) -> None:
    encode = msgspec.json.Encoder().encode
    with open(path, "wb") as handle:
        for decision in decisions:
            handle.write(encode(decision) + b"\n")


def replay(
    events: list[RequestEvent],
    settings: Settings | None = None,
    timeout: float = 60.0,
    show_progress: bool = True,
) -> list[Decision]:
    """Publish ``events`` and return their decisions in the same order."""
    settings = settings or get_settings()
    ensure_topics(settings)  # a replay may start before the first worker has created them
    wanted = {event.request_id for event in events}
    got: dict[str, Decision] = {}
    with (
        DecisionSubscriber(settings) as subscriber,
        RequestPublisher(settings) as publisher,
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            disable=not show_progress, transient=False,
        ) as progress,
    ):
        sent_bar = progress.add_task("published", total=len(events))
        decided_bar = progress.add_task("decided  ", total=len(wanted))

        def collect(poll_timeout: float) -> int:
            fresh = 0
            for decision in subscriber.poll(poll_timeout):
                if decision.request_id in wanted and decision.request_id not in got:
                    got[decision.request_id] = decision
                    fresh += 1
            progress.update(decided_bar, completed=len(got))
            return fresh

        for start in range(0, len(events), _CHUNK):
            chunk = events[start : start + _CHUNK]
            publisher.publish_many(chunk)
            progress.update(sent_bar, advance=len(chunk))
            collect(0.0)
        publisher.flush()
        last_progress = time.monotonic()
        while len(got) < len(wanted):
            if collect(0.2):
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > timeout:
                missing = sorted(wanted - got.keys())
                raise ReplayIncomplete(missing, len(wanted), timeout)
    return [got[event.request_id] for event in events]
