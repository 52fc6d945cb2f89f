"""``ratewarden whatif``: recorded traffic decided again offline under candidate limits, and what changes.

Reads a trace and its recorded decisions (files, or the requests and decisions topics), decides every
request again with the limiter's own pure code (``agents.whatif``) under the limits in force or a
candidate, and compares: transitions per verdict, users hurt most, changes from flagged IPs; CSV,
Parquet and PNG charts with ``--out``. Without a candidate it is the reproduction check: every
recorded verdict and reason should come out again. Bans are taken as recorded (see docs/whatif.md).
"""

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:  # imported where used: the CLI builds its parser from this module for every command
    from agents.rules import LimitBook
    from agents.whatif import Diff, Flagged
    from ratewarden.whatif_inputs import Recorded

__all__ = ["WhatIfRun", "add_parser", "compare", "decide_recorded", "run_whatif"]

logger = logging.getLogger(__name__)

_CHUNK = 100_000


class WhatIfRun(NamedTuple):
    recorded: "Recorded"
    replayed: tuple[list[str], list[str]]
    diff: "Diff"
    written: list[Path]
    timings: dict[str, float]  # seconds per phase


def decide_recorded(recorded: "Recorded", book: "LimitBook",
                    progress: Callable[[int], None] | None = None) -> tuple[list[str], list[str]]:
    """(verdicts, reasons) of every recorded event decided again under ``book``, in chunks (``progress``
    is told how many are done after each)."""
    from agents.whatif import Replayer

    events = recorded.events
    replayer, verdicts, reasons = Replayer(book, recorded.blocks), [], []
    for start in range(0, len(events), _CHUNK):
        got_verdicts, got_reasons = replayer.decide(events[start:start + _CHUNK])
        verdicts += got_verdicts
        reasons += got_reasons
        if progress is not None:
            progress(len(verdicts))
    return verdicts, reasons


def compare(recorded: "Recorded", replayed: tuple[list[str], list[str]], top: int = 10) -> tuple["Diff", "Flagged"]:
    """The diff of recorded and replayed verdicts (``agents.whatif.diff``) and the flagged subjects it used."""
    from agents.whatif import Flagged, diff

    flagged = Flagged(recorded.flagged)
    events = recorded.events
    return diff((recorded.verdicts, recorded.reasons), replayed, [e.user_id for e in events],
                [e.ip for e in events], flagged, top), flagged


def run_whatif(
    recorded_source: Callable[[], "Recorded"], book: "LimitBook", out: Path | None = None, console: Console | None = None,
    top: int = 10, show_progress: bool = True, is_candidate: bool = False,
) -> WhatIfRun:
    """Read (``recorded_source()``), decide under ``book``, compare, print, write. ``is_candidate`` words
    the summary as a candidate's changes, else as the reproduction check; ``timings`` has seconds per phase."""
    from ratewarden.whatif_report import build_frames, draw_charts, print_tables, write_tables

    console = console or Console()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    columns = (TextColumn("{task.description:8s}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not (show_progress and console.is_terminal),
                  transient=True) as progress:
        task = progress.add_task("reading", total=None)
        recorded = recorded_source()
        phase("read")
        progress.update(task, description="deciding", total=len(recorded.events), completed=0)
        replayed = decide_recorded(recorded, book, lambda done: progress.update(task, completed=done))
        phase("decide")
        progress.update(task, description="comparing", total=None)
        result, flagged = compare(recorded, replayed, top)
        frames = build_frames(recorded, replayed, result, flagged)
        phase("compare")
    _summary(console, recorded, result, is_candidate)
    print_tables(frames, result, console, flagged, top)
    phase("print")
    written: list[Path] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        written = write_tables(frames, out)
        phase("tables")
        written += draw_charts(frames, out)
        phase("charts")
        console.print(f"wrote {', '.join(p.name for p in written)} to {out}/")
    return WhatIfRun(recorded, replayed, result, written, timings)


def _summary(console: Console, recorded: "Recorded", result: "Diff", is_candidate: bool) -> None:
    left_out = f"; {recorded.unrecorded:,} events without a recorded decision left out" if recorded.unrecorded else ""
    blocks = f", {len(recorded.blocks):,} blocked as recorded" if recorded.blocks else ""
    if is_candidate:
        console.print(f"candidate: [bold]{result.total - result.reproduced:,}[/bold] of {result.total:,} verdicts "
                      f"or reasons change{blocks}{left_out}", soft_wrap=True)
    else:
        console.print(f"[bold]{result.reproduced:,} of {result.total:,}[/bold] verdicts reproduced "
                      f"(verdict and reason, limits in force{blocks}){left_out}", soft_wrap=True)


def _run(args) -> int:
    from ratewarden.whatif_limits import (
        candidate_book, default_limit, limits_in_force, new_book, parse_set, parse_tier_set, read_limits_file,
        read_stream_rules,
    )
    from ratewarden.whatif_inputs import recorded_source
    from streams.settings import get_settings

    settings = get_settings()
    source = recorded_source(args, settings)
    changes = [parse_set(spec) for spec in args.set or ()]
    tier_changes = [parse_tier_set(spec) for spec in args.set_tier or ()]
    default = default_limit(args.default, settings)
    if args.in_force:
        book = new_book(default, read_limits_file(Path(args.in_force)))
    else:  # tiers and memberships too, as the worker reads them
        book = limits_in_force(settings, new_book(default))
    candidate_book(book, read_limits_file(Path(args.limits)) if args.limits else None, changes, tier_changes,
                   read_stream_rules(Path(args.rules)) if args.rules else None)
    is_candidate = bool(args.limits or changes or tier_changes or args.default or args.rules)
    run = run_whatif(source, book, Path(args.out) if args.out else None, Console(), args.top, is_candidate=is_candidate)
    return 0 if is_candidate or run.diff.reproduced == run.diff.total else 1


def add_parser(sub) -> None:
    """Register ``ratewarden whatif`` on the CLI's subparsers."""
    from ratewarden.whatif_inputs import add_recorded_arguments

    p = sub.add_parser("whatif", help="replay recorded traffic offline under candidate limits; diff the verdicts")
    add_recorded_arguments(p, "flags (JSON lines of IpFlag): changes from flagged IPs are counted")
    p.add_argument("--in-force", help="users' limits in force (JSON array or lines of RateLimit, as `limits list --json` "
                   "prints; default: the rate-limits topic, tiers included)")
    p.add_argument("--limits", help="candidate: users' limits replacing theirs in force (same format; tiers kept)")
    p.add_argument("--set", action="append", metavar="USER[:TYPE]=LIMIT/WINDOW[/ALGORITHM[/BURST]]",
                   help="a candidate limit for one user (repeatable), over the limits in force or --limits")
    p.add_argument("--set-tier", action="append", metavar="TIER[:TYPE]=LIMIT/WINDOW[/ALGORITHM[/BURST]]",
                   help="a candidate limit for one tier in force (repeatable)")
    p.add_argument("--default", metavar="LIMIT/WINDOW[/ALGORITHM]", help="candidate default limit")
    p.add_argument("--rules", metavar="FILE", help="candidate: the ratewarden domain of a rules file (as `limits load` "
                   "takes it) in place of the one in force")
    p.add_argument("--out", help="directory for the CSV, Parquet and PNG files")
    p.add_argument("--top", type=int, default=10, help="rows in the users and IPs tables")
    p.set_defaults(func=_run)
