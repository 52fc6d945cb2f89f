"""``ratewarden advise``'s outputs: the tables (terminal, CSV, Parquet), the chart, the rules files and the
script of ``ratewarden limits`` commands. Nothing here applies anything.

Files: ``advice_tiers.jsonl`` (``TierLimit`` then ``TierMembership`` records, the values of the rate-limits
topic's ``tier:<name>`` and ``member:<user>`` keys); ``advice_tier_limits.jsonl`` (each member's tier limit
as its own ``RateLimit``: the same decisions, in the format ``ratewarden whatif --limits`` reads);
``advice_user_limits.jsonl`` (each user's own advised limit, same format); ``advice_apply.sh`` (``limits
tier set`` and ``limits tier assign``) and ``advice_users.sh`` (``limits set`` per user).
"""

import logging
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["build_frames", "draw_chart", "print_tables", "write_files"]

logger = logging.getLogger(__name__)


def build_frames(profiles, members, tier_advice, user_advice, in_force, policy) -> dict[str, pd.DataFrame]:
    """``users`` (profile, tier, limit in force per the policy's window, advice) and ``tiers``."""
    rows = []
    for user, p in profiles.items():
        rule = in_force.rules_for(user, "read")[0]
        tier = members.get(user)
        advice = user_advice.get(user)
        rows.append({"user": user, "tier": tier, "requests": p.requests, "windows": p.windows, "p50": p.p50,
                     "p95": p.p95, "p99": p.p99, "max": p.max, "cv": round(p.cv, 3),
                     "burstiness": round(p.burstiness, 2), "in_force": rule.limit * policy.window / rule.window,
                     "in_force_scope": "own" if in_force.get(user) else "tier" if rule.scope == "tier" else "default",
                     "advised": advice.limit if advice else None,
                     "tier_limit": tier_advice[tier].limit if tier in tier_advice else None,
                     "throttled": advice.throttled if advice else 0})
    columns = ["user", "tier", "requests", "windows", "p50", "p95", "p99", "max", "cv", "burstiness", "in_force",
               "in_force_scope", "advised", "tier_limit", "throttled"]
    users = pd.DataFrame(rows, columns=columns)
    tiers = pd.DataFrame([{
        "tier": a.group, "users": a.users,
        "p50": float(users.loc[users.tier == a.group, "p50"].median()),
        "p99": float(users.loc[users.tier == a.group, "p99"].median()),
        "max": int(users.loc[users.tier == a.group, "max"].max()),
        "peak_user": _peak_user(users, a.group),
        "limit": a.limit, "window": policy.window, "algorithm": policy.algorithm, "burst": policy.burst,
        "requests": a.requests, "throttled": a.throttled, "share": a.share, "abusive": a.abusive,
        "stopped": a.stopped} for a in tier_advice.values()])
    return {"users": users, "tiers": tiers}


def _peak_user(users: pd.DataFrame, tier: str) -> str:
    """The member with the most requests in one window (the first by name of equals): who sets the limit."""
    return users.loc[users.tier == tier].sort_values(["max", "user"], ascending=[False, True]).user.iloc[0]


def print_tables(frames: dict[str, pd.DataFrame], console: Console, top: int = 10) -> None:
    table = Table("tier", "users", "p50", "p99", "max", "peak user", "limit", "honest", "throttled", "share",
                  "abusive", "stopped",
                  title="tiers: median profile per window, the advised limit, the what-if's counts")
    for r in frames["tiers"].itertuples():
        table.add_row(escape(r.tier), f"{r.users:,}", f"{r.p50:g}", f"{r.p99:.1f}", f"{r.max:,}", escape(r.peak_user),
                      f"{r.limit:,}",
                      f"{r.requests:,}", f"{r.throttled:,}", f"{r.share:.3%}", f"{r.abusive:,}", f"{r.stopped:,}")
    console.print(table)
    users = frames["users"].dropna(subset=["advised"])
    if users.empty:
        return
    change = np.abs(np.log((users.advised + 1) / (users.in_force + 1)))
    shown = users.assign(change=change).sort_values(["change", "user"], ascending=[False, True]).head(top)
    table = Table("user", "tier", "p50", "p99", "max", "in force", "advised", "tier limit",
                  title=f"users whose advice differs most from their limit in force (top {top})")
    for r in shown.itertuples():
        table.add_row(escape(r.user), escape(str(r.tier)), f"{r.p50:g}", f"{r.p99:g}", f"{r.max:,}",
                      f"{r.in_force:g} ({r.in_force_scope})", f"{int(r.advised):,}",
                      "" if pd.isna(r.tier_limit) else f"{int(r.tier_limit):,}")
    console.print(table)


def _encode_lines(path: Path, records: list) -> Path:
    import msgspec

    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in records))
    return path


def write_files(frames, tier_advice, user_advice, members, policy, out: Path) -> list[Path]:
    from schemas.limits import RateLimit, TierLimit, TierMembership

    from ratewarden.reports import write_frames

    written = write_frames(frames, out, prefix="advice_")
    shape = {"window": policy.window, "algorithm": policy.algorithm, "burst": policy.burst}
    tier_limits = [TierLimit(tier=a.group, limit=a.limit, **shape) for a in tier_advice.values()]
    memberships = [TierMembership(user_id=u, tier=t) for u, t in sorted(members.items()) if t in tier_advice]
    written.append(_encode_lines(out / "advice_tiers.jsonl", [*tier_limits, *memberships]))
    written.append(_encode_lines(out / "advice_tier_limits.jsonl", [
        RateLimit(user_id=m.user_id, limit=tier_advice[m.tier].limit, **shape) for m in memberships]))
    written.append(_encode_lines(out / "advice_user_limits.jsonl", [
        RateLimit(user_id=u, limit=a.limit, **shape) for u, a in sorted(user_advice.items())]))
    flags = f" --window {policy.window:g} --algorithm {policy.algorithm}" + (
        f" --burst {policy.burst}" if policy.burst is not None else "")
    head = ["#!/bin/sh", f"# written by ratewarden advise (throttle at most {policy.max_throttled:g} of honest "
            "requests); review, then run. Nothing has been applied.", "set -e"]
    tiers_script = out / "advice_apply.sh"  # one send: a command per member would take minutes for thousands
    tiers_script.write_text("\n".join(
        head + ['ratewarden limits tier import "$(dirname "$0")/advice_tiers.jsonl"',
                "# the same, one command each:"]
        + [f"# ratewarden limits tier set {t.tier} {t.limit}{flags}" for t in tier_limits]
        + [f"# ratewarden limits tier assign {shlex.quote(m.user_id)} {m.tier}" for m in memberships]) + "\n")
    users_script = out / "advice_users.sh"
    users_script.write_text("\n".join(
        head + [f"ratewarden limits set {shlex.quote(u)} {a.limit}{flags}" for u, a in sorted(user_advice.items())])
        + "\n")
    written += [tiers_script, users_script]
    return written


def draw_chart(honest, members, tier_advice, policy, path: Path) -> Path:
    """Per tier: the distribution of its members' requests per window, the advised limit drawn on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.advisor import window_counts

    counts = window_counts(honest, policy.window)
    names = list(tier_advice)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = np.concatenate([c for u, c in counts.items() if members.get(u) == name] or [np.zeros(0, int)])
        limit = tier_advice[name].limit
        ax.hist(values, bins=np.linspace(0, max(limit, values.max(initial=1)) * 1.05, 30), color="#4c78a8")
        ax.axvline(limit, color="#d62728", lw=2, label=f"advised {limit}")
        ax.set_yscale("log")
        ax.set_title(f"{name}: {tier_advice[name].users} users", fontsize=10)
        ax.set_xlabel(f"requests per {policy.window:g} s window")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("user-windows")
    fig.suptitle(f"honest requests per window by tier; advised limit throttles <= {policy.max_throttled:.2%}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
