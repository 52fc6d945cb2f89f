"""The worker's event-loop stalls during a run, from its ``ratewarden_event_loop_lag_seconds`` histogram.

The p99 of inline decisions is set by the moments the worker's loop cannot turn (a flush done in one
piece, a garbage collection, the CPU taken by another process): every request arriving meanwhile
waits. The benchmark scrapes the worker's metrics port before and after each run of ours and notes
the share of its loop probe's timers (one every 10 ms, ``streams.loop_lag``) that ran more than 10 ms
late, and how many ran more than 50 ms late.
"""

from __future__ import annotations

from bench.metrics_page import MetricsPage, read_page

__all__ = ["LagSnapshot", "parse", "scrape", "stalls_note"]

METRIC = "ratewarden_event_loop_lag_seconds"
#: (ticks, ticks at most 10 ms late, ticks at most 50 ms late)
LagSnapshot = tuple[float, float, float]


def scrape(url: str | None) -> LagSnapshot | None:
    """The probe's counts at ``url`` (a Prometheus text page); None without a url or when it cannot be read."""
    if url is None:
        return None
    try:
        return parse(read_page(url))
    except OSError:
        return None


def parse(page: MetricsPage) -> LagSnapshot | None:
    """The probe's counts on a metrics page; None if it has none."""
    counts = (page.value(f"{METRIC}_count"), page.value(f"{METRIC}_bucket", le="0.01"),
              page.value(f"{METRIC}_bucket", le="0.05"))
    return None if None in counts else counts


def stalls_note(before: LagSnapshot | None, after: LagSnapshot | None) -> str:
    """"worker loop: 0.42% of ticks >10 ms late, 3 >50 ms" for the run between the two snapshots ("" if unknown)."""
    if before is None or after is None or after[0] <= before[0]:
        return ""
    ticks = after[0] - before[0]
    over_10 = ticks - (after[1] - before[1])
    over_50 = ticks - (after[2] - before[2])
    return f"worker loop: {100 * over_10 / ticks:.2f}% of ticks >10 ms late, {over_50:.0f} >50 ms"
