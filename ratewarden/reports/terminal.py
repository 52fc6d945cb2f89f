"""The terminal part of the report: top offenders and a timeline of flags (rich tables)."""

from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table

from ratewarden.reports.frames import Frames
from ratewarden.reports.links import console_link

__all__ = ["print_report"]


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%H:%M:%S")


def print_report(frames: Frames, console: Console, top: int = 15, console_url: str | None = None) -> None:
    """Top offenders, their console pages when ``console_url`` (a gateway or console URL) is given, timeline."""
    d, flags, ips = frames.decisions, frames.flags, frames.ips
    flagged = ips[ips["flagged_windows"] > 0]
    console.print(
        f"[bold]{len(d):,}[/bold] decisions from {d['ip'].nunique():,} IPs between {_clock(d['ts_event'].min())} "
        f"and {_clock(d['ts_event'].max())} UTC; [bold]{len(flagged)}[/bold] IPs flagged in {len(flags)} flags "
        f"({int(flagged['allowlisted'].sum())} allow-listed: reported, not banned)"
    )
    table = Table("ip", "score", "rules", "windows", "first flag", "requests", "users", "throttled", "ip_blocked",
                  title=f"top {min(top, len(flagged))} offenders by score")
    for row in flagged.head(top).itertuples(index=False):
        table.add_row(
            row.ip + (" [dim](allow-listed)[/dim]" if row.allowlisted else ""), f"{row.max_score:.1f}", row.rules,
            str(int(row.flagged_windows)), _clock(row.first_flagged), f"{int(row.requests):,}", str(int(row.users)),
            f"{int(row.throttle):,}", f"{int(row.ip_blocked):,}",
        )
    console.print(table)
    if console_url and len(flagged):
        console.print("console pages of the top offenders:")
        for subject in flagged.head(top)["ip"]:  # whole URLs on one line each, to click or copy
            console.print(f"  {subject}  {console_link(console_url, subject)}", soft_wrap=True, markup=False,
                          highlight=False)
    timeline = Table("window", "requests", "throttled", "blocked", "flags", "newly flagged",
                     title="timeline of the windows with flags (UTC)")
    t = frames.timeline.set_index("minute")
    firsts = flags.drop_duplicates("ip") if len(flags) else flags
    for at, group in flags.groupby("window") if len(flags) else ():
        new = firsts[firsts["window"] == at]
        shown = ", ".join(f"{r.ip} ({r.rules})" for r in new.head(3).itertuples()) + (" ..." if len(new) > 3 else "")
        minute = t.loc[at] if at in t.index else None
        timeline.add_row(
            at.strftime("%H:%M"), *(f"{int(minute[c]):,}" if minute is not None else "-"
                                   for c in ("requests", "throttle", "block")),
            str(len(group)), shown or "-",
        )
    console.print(timeline)
