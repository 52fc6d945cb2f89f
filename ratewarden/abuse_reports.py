"""Which abuse reports count: the newest record per window and analytics shard.

A window is reported once per shard (the ``ip-features`` partitions it owns); a window forced out
before every source closed it may be reported again with a correction (``revision`` + 1), and a
restarted shard may report a window again. Readers keep the last record per
(``window_start``, ``partitions``), in topic order: the gateway's ``GET /reports/abuse``, the
analyst report and the tests all read reports through :func:`current_reports`.
"""

from collections.abc import Iterable

from schemas.flags import AbuseReport

__all__ = ["current_reports"]


def current_reports(reports: Iterable[AbuseReport]) -> list[AbuseReport]:
    """The newest report of each window and shard, given in topic order; oldest window first."""
    newest: dict[tuple[float, tuple[int, ...]], AbuseReport] = {}
    for report in reports:
        newest[(report.window_start, tuple(report.partitions))] = report
    return sorted(newest.values(), key=lambda r: (r.window_start, r.partitions))
