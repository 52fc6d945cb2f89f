"""``ratewarden report``: what the abuse analytics saw, for analysts.

Reads decisions and flags (JSON-lines files or the topics), prints the top offenders (with links
to their pages in the gateway's web console when its URL is known) and a timeline of flags, writes
CSV and Parquet tables (``flags``, ``ips``, ``timeline``) and three PNG charts.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from rich.console import Console

from agents.ban_horizon import only_flags
from ratewarden.reports.charts import draw_all
from ratewarden.reports.frames import Frames, build_frames, read_lines
from ratewarden.reports.terminal import print_report

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Frames", "build_frames", "latest_abuse_reports", "print_report", "read_topic", "run_report", "write_frames", "write_tables"]

TABLES = ("flags", "ips", "timeline")


def write_frames(frames: Mapping[str, "pd.DataFrame"], out: Path, prefix: str = "") -> list[Path]:
    """Each frame as ``<prefix><name>.csv`` and ``.parquet`` in ``out`` (the report, whatif and advise
    write their tables alike); the paths written, in order."""
    written = []
    for name, frame in frames.items():
        csv, parquet = out / f"{prefix}{name}.csv", out / f"{prefix}{name}.parquet"
        frame.to_csv(csv, index=False)
        frame.to_parquet(parquet, index=False)
        written += [csv, parquet]
    return written


def write_tables(frames: Frames, out: Path) -> list[Path]:
    return write_frames({name: getattr(frames, name) for name in TABLES}, out)


def read_topic(settings, topic: str, last: int | None = None, deadline: float | None = None) -> list[bytes]:
    """Every value of ``topic`` from the beginning (or the ``last`` ones of each partition) to its current end
    (by ``deadline``, a ``time.monotonic()``, if given: TimeoutError after it)."""
    from ratewarden.client import read_topic_records

    return [r.value for r in read_topic_records(settings, topic, last=last, deadline=deadline) if r.value is not None]


def latest_abuse_reports(settings, last: int = 10) -> list[dict]:
    """The newest per-window abuse reports from the ``abuse-reports`` topic (a correction replaces the
    report it corrects), as JSON-ready dicts, oldest first: what ``GET /reports/abuse`` can serve."""
    import msgspec

    from schemas.flags import AbuseReport

    from ratewarden.abuse_reports import current_reports

    decode = msgspec.json.Decoder(AbuseReport).decode
    reports = [decode(value) for value in read_topic(settings, settings.abuse_reports_topic, last=4 * last)]
    return [msgspec.to_builtins(r) for r in current_reports(reports)[-last:]]


def run_report(
    out: Path,
    decisions: Path | None = None,
    flags: Path | None = None,
    settings=None,
    console: Console | None = None,
    top: int = 15,
    console_url: str | None = None,
) -> list[Path]:
    """Build, print and write the report; with ``settings`` (and no files) read the topics instead.

    ``console_url`` (a gateway's URL): each top offender's console page is printed under the table.
    """
    console = console or Console()
    if settings is not None and decisions is None:
        decision_values = read_topic(settings, settings.decisions_topic)
        flag_values = read_topic(settings, settings.ip_flags_topic)
    else:
        decision_values, flag_values = read_lines(decisions), read_lines(flags)
    if not decision_values:
        raise ValueError("no decisions to report on")
    frames = build_frames(decision_values, only_flags(flag_values))  # progress markers are no flags
    out.mkdir(parents=True, exist_ok=True)
    print_report(frames, console, top=top, console_url=console_url)
    written = write_tables(frames, out) + draw_all(frames, out)
    console.print(f"wrote {', '.join(p.name for p in written)} to {out}/")
    return written
