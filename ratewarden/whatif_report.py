"""Outputs of ``ratewarden whatif``: frames (pandas), terminal tables (rich), CSV/Parquet and PNG charts.

Frames are built with numpy counts over verdict codes (a million requests in well under a second):
``users`` (per user: recorded and replayed verdicts, transitions), ``minutes`` (per minute of event
time) and ``changed`` (one row per request whose verdict or reason changed).
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from agents.whatif import NO_DECISION, Diff, Flagged
from ratewarden.whatif_inputs import Recorded

__all__ = ["WhatIfFrames", "build_frames", "draw_charts", "print_tables", "write_tables"]

VERDICTS = ("allow", "throttle", "block", NO_DECISION)
_CODE = {verdict: i for i, verdict in enumerate(VERDICTS)}


class WhatIfFrames(NamedTuple):
    users: pd.DataFrame
    minutes: pd.DataFrame
    changed: pd.DataFrame


def _counts(groups: np.ndarray, n: int, codes: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    table = np.bincount(groups * len(VERDICTS) + codes, minlength=n * len(VERDICTS)).reshape(n, len(VERDICTS))
    return {f"{prefix}{verdict}": table[:, i] for i, verdict in enumerate(VERDICTS[:3])}


def _per(groups: np.ndarray, n: int, old: np.ndarray, new: np.ndarray, changed: np.ndarray) -> dict:
    def count(mask):
        return np.bincount(groups[mask], minlength=n)

    return {"requests": np.bincount(groups, minlength=n), **_counts(groups, n, old, "recorded_"),
            **_counts(groups, n, new, ""),
            "allow_to_throttle": count((old == 0) & (new == 1)), "throttle_to_allow": count((old == 1) & (new == 0)),
            "changed": count(changed)}


def build_frames(recorded: Recorded, replayed: tuple[list[str], list[str]], result: Diff,
                 flagged: Flagged) -> WhatIfFrames:
    events = recorded.events
    old = np.fromiter((_CODE.get(v, 3) for v in recorded.verdicts), np.int64, len(events))
    new = np.fromiter((_CODE[v] for v in replayed[0]), np.int64, len(events))
    changed = np.zeros(len(events), bool)
    changed[result.changed] = True
    user_codes, user_names = pd.factorize(pd.Series([e.user_id for e in events]))
    users = pd.DataFrame({"user_id": user_names, **_per(user_codes, len(user_names), old, new, changed)})
    users = users.sort_values(["allow_to_throttle", "changed", "requests"], ascending=False, ignore_index=True)
    minute_index = np.fromiter((e.ts // 60 for e in events), np.float64, len(events))
    minute_codes, minute_values = pd.factorize(minute_index, sort=True)
    minutes = pd.DataFrame({"minute": pd.to_datetime(minute_values * 60, unit="s", utc=True),
                            **_per(minute_codes, len(minute_values), old, new, changed)})
    rows = []
    for i in result.changed:
        e = events[i]
        subject = flagged.subject_of(e.ip)
        rows.append((e.request_id, e.user_id, e.ip, e.request_type, e.ts, recorded.verdicts[i], recorded.reasons[i],
                     replayed[0][i], replayed[1][i], subject is not None, subject or ""))
    frame = pd.DataFrame.from_records(rows, columns=[
        "request_id", "user_id", "ip", "request_type", "ts_event", "recorded_verdict", "recorded_reason",
        "verdict", "reason", "from_flagged", "flagged_as"])
    frame.insert(5, "minute", pd.to_datetime((frame["ts_event"] // 60) * 60, unit="s", utc=True))
    return WhatIfFrames(users, minutes, frame)


def print_tables(frames: WhatIfFrames, result: Diff, console: Console, flagged: Flagged, top: int = 10) -> None:
    table = Table("recorded", "replayed", "requests", "share", title="verdicts, recorded -> replayed")
    for label, n in sorted(result.transitions.items(), key=lambda item: (_same(item[0]), -item[1])):
        before, after = label.split("->")
        table.add_row(before, after if before == after else f"[bold]{after}[/bold]", f"{n:,}", f"{n / result.total:.2%}")
    console.print(table)
    hurt = frames.users[frames.users["allow_to_throttle"] > 0].head(top)
    if len(hurt):
        table = Table("user", "requests", "allow->throttle", "throttle->allow", "throttled", "now",
                      title=f"users hurt most (top {len(hurt)} by allow->throttle)")
        for row in hurt.itertuples(index=False):
            table.add_row(str(row.user_id), f"{row.requests:,}", f"{row.allow_to_throttle:,}",
                          f"{row.throttle_to_allow:,}", f"{row.recorded_throttle:,}", f"{row.throttle:,}")
        console.print(table)
    else:
        console.print("no request goes from allow to throttle")
    changed = frames.changed
    if not len(flagged):
        console.print("no flagged IPs given (--flags, or the ip-flags topic)")
        return
    from_flagged = changed[changed["from_flagged"]]
    console.print(f"changes from flagged IPs ({len(flagged):,} addresses and networks): {len(from_flagged):,} of "
                  f"{len(changed):,} changed requests")
    if len(from_flagged):
        table = Table("flagged as", "changed", "transitions", title=f"flagged IPs with the most changes (top {top})")
        moves = (from_flagged["recorded_verdict"] + "->" + from_flagged["verdict"]).groupby(from_flagged["flagged_as"])
        for ip, labels in sorted(moves, key=lambda item: (-len(item[1]), item[0]))[:top]:
            table.add_row(ip, f"{len(labels):,}", ", ".join(f"{k} {v:,}" for k, v in labels.value_counts().items()))
        console.print(table)


def _same(label: str) -> bool:
    before, _, after = label.partition("->")
    return before == after


def write_tables(frames: WhatIfFrames, out: Path) -> list[Path]:
    from ratewarden.reports import write_frames

    return write_frames(frames._asdict(), out)


def draw_charts(frames: WhatIfFrames, out: Path, top: int = 20) -> list[Path]:
    from ratewarden.reports.charts import _save, _time_axis, plt

    m = frames.minutes
    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(m["minute"], m["recorded_throttle"], color="#7f7f7f", label="recorded")
    ax.plot(m["minute"], m["throttle"], color="#d62728", label="replayed (candidate)")
    ax.set_title("Throttled requests per minute: recorded against replayed")
    ax.set_ylabel("throttled / minute")
    ax.set_ylim(bottom=0)
    _time_axis(ax)
    ax.legend(loc="upper left")
    paths = [_save(fig, out / "throttled_per_minute.png")]
    hurt = frames.users[frames.users["allow_to_throttle"] > 0].head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.32 * len(hurt) + 1.2)))
    ax.set(title=f"Users hurt most: requests allowed as recorded, throttled as replayed (top {len(hurt)})",
           xlabel="requests (throttle -> allow to the left)")
    names = hurt["user_id"].astype(str)
    ax.barh(names, hurt["allow_to_throttle"], color="#d62728", label="allow -> throttle")
    ax.barh(names, -hurt["throttle_to_allow"], color="#2ca02c", label="throttle -> allow")
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    paths.append(_save(fig, out / "users_hurt.png"))
    return paths
