"""The crowd factor of a window: how much busier than usual the whole population of addresses is.

A flash crowd (a sale, a launch) lifts every honest client at once; rules that read only a rate
would then flag honest API clients. The factor is the window's median requests per address over
the median of the previous ``windows`` windows' medians (never below 1); the scraper bar rises with
it and rate-only findings during a crowd are low severity (:mod:`agents.detector_rules`). Pure:
windows are passed by their start, a window reported again (a correction) is not counted twice.
"""

import statistics

__all__ = ["CrowdBaseline"]


class CrowdBaseline:
    """The recent windows' median requests per address, by window start."""

    def __init__(self, windows: int = 10) -> None:
        self.windows = windows
        self.medians: dict[float, float] = {}

    def factor(self, start: float, median: float) -> float:
        """Record window ``start``'s median and return its factor against the windows before it."""
        self.medians[start] = median
        for old in sorted(self.medians)[: max(0, len(self.medians) - self.windows - 1)]:
            del self.medians[old]
        before = [m for s, m in sorted(self.medians.items()) if s < start][-self.windows:]
        if not before:
            return 1.0
        baseline = statistics.median(before)
        return max(1.0, median / baseline) if baseline > 0 else 1.0
