"""PNG charts of a report (matplotlib, Agg backend: no display needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402 - the backend is chosen first
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ratewarden.reports.frames import VERDICTS, Frames  # noqa: E402

__all__ = ["draw_all", "RULE_COLOURS"]

RULE_COLOURS = {
    "flood": "#d62728",
    "credential_stuffing": "#9467bd",
    "low_and_slow": "#8c564b",
    "scraper": "#ff7f0e",
    "hammering": "#e377c2",
}
VERDICT_COLOURS = {"allow": "#2ca02c", "throttle": "#ffbf00", "block": "#d62728"}


def _time_axis(ax) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz="UTC"))
    ax.set_xlabel("event time (UTC)")
    ax.grid(alpha=0.3)


def requests_per_minute(frames: Frames, path: Path) -> Path:
    t = frames.timeline
    fig, ax = plt.subplots(figsize=(11, 5.5))
    ax.plot(t["minute"], t["requests"], color="#1f77b4", label="all requests")
    ax.plot(t["minute"], t["from_flagged_ips"], color="#7f7f7f", label="from IPs flagged at some point")
    if len(frames.flags):
        firsts = frames.flags[~frames.flags["allowlisted"].astype(bool)].drop_duplicates("ip")
        top = t["requests"].max()
        for rule, group in firsts.groupby("rule"):
            times = group["flagged_at"]
            ax.vlines(times, 0, top, colors=RULE_COLOURS.get(rule, "black"), alpha=0.6, linewidth=1.2)
            ax.scatter(times, [top * 1.03] * len(times), marker="v", color=RULE_COLOURS.get(rule, "black"),
                       label=f"first flag: {rule} ({len(group)} IPs)", zorder=3)
    ax.set_title("Requests per minute, with flags marked (first flag of each IP, by rule)")
    ax.set_ylabel("requests / minute")
    ax.set_ylim(bottom=0)
    _time_axis(ax)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=3, frameon=False)
    return _save(fig, path)


def top_ips_by_score(frames: Frames, path: Path, n: int = 20) -> Path:
    ips = frames.ips[frames.ips["flagged_windows"] > 0].head(n).iloc[::-1]
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.32 * len(ips) + 1.2)))
    if len(ips):
        first_rule = ips["rules"].str.split("+").str[0]
        colours = [RULE_COLOURS.get(rule, "grey") for rule in first_rule]
        labels = [f"{ip} (allow-listed)" if a else ip for ip, a in zip(ips["ip"], ips["allowlisted"])]
        ax.barh(labels, ips["max_score"], color=colours, hatch=["//" if a else "" for a in ips["allowlisted"]])
        for y, (score, rules) in enumerate(zip(ips["max_score"], ips["rules"])):
            ax.text(score, y, f" {score:.0f}  {rules}", va="center", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(left=1, right=ips["max_score"].max() * 8)
        handles = [Patch(color=RULE_COLOURS.get(rule, "grey"), label=rule) for rule in dict.fromkeys(first_rule)]
        if ips["allowlisted"].any():
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="allow-listed"))
        ax.legend(handles=handles, title="first rule", loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no IP was flagged", ha="center", transform=ax.transAxes)
    ax.set_title(f"Top {len(ips)} IPs by anomaly score (max robust z over their flagged windows)")
    ax.set_xlabel("score (log scale)")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def verdict_mix(frames: Frames, path: Path) -> Path:
    t = frames.timeline
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.stackplot(t["minute"], *[t[v] for v in VERDICTS], labels=list(VERDICTS),
                 colors=[VERDICT_COLOURS[v] for v in VERDICTS], alpha=0.85)
    ax.set_title("Verdict mix over time (decisions per minute)")
    ax.set_ylabel("decisions / minute")
    _time_axis(ax)
    ax.legend(loc="upper left")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(frames: Frames, out: Path) -> list[Path]:
    return [
        requests_per_minute(frames, out / "requests_per_minute.png"),
        top_ips_by_score(frames, out / "top_ips_by_score.png"),
        verdict_mix(frames, out / "verdict_mix.png"),
    ]
