"""Which abuse reports count: the newest word on each window and ``ip-features`` partition.

A window is reported once per analytics shard (the ``ip-features`` partitions it owns). It can be
reported again: a window forced out before every source closed it is corrected (``revision`` + 1),
and a shard that took partitions over after a crash may report a window its predecessor had
reported. Each report's ``shares`` split its counts by partition, and an IP lives in exactly one
partition, so the newest share per (window, partition) counts every request exactly once however
partitions moved. :func:`current_reports` is what readers show (the gateway's
``GET /reports/abuse``, the analyst report), :func:`window_totals` what they count.
"""

from collections.abc import Iterable

from schemas.flags import AbuseReport

__all__ = ["current_reports", "window_totals"]


def current_reports(reports: Iterable[AbuseReport]) -> list[AbuseReport]:
    """Reports (given in topic order) not wholly superseded by newer ones for the same window; oldest window first."""
    covered: set[tuple[float, int]] = set()
    kept = []
    for report in reversed(list(reports)):
        cells = {(report.window_start, p) for p in report.partitions}
        if not cells <= covered:
            kept.append(report)
        covered |= cells
    return sorted(reversed(kept), key=lambda r: r.window_start)


def window_totals(reports: Iterable[AbuseReport]) -> dict[float, dict[str, int]]:
    """Per window start: ``requests``, ``ips`` and ``refused`` from the newest share of every partition."""
    newest: dict[tuple[float, int], tuple[int, int, int]] = {}
    for report in reports:
        for share in report.shares:
            newest[(report.window_start, share.partition)] = (share.requests, share.ips, share.refused)
    totals: dict[float, dict[str, int]] = {}
    for (start, _), (requests, ips, refused) in sorted(newest.items()):
        total = totals.setdefault(start, {"requests": 0, "ips": 0, "refused": 0})
        total["requests"] += requests
        total["ips"] += ips
        total["refused"] += refused
    return totals
