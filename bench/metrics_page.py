"""A process's Prometheus metrics page as the benchmarks read it (the worker's ``--metrics-port``).

Parsed once with prometheus_client's own text parser; a sample is looked up by name and labels, or
summed over every label set of a name.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["MetricsPage", "read_page"]


class MetricsPage:
    def __init__(self, text: str) -> None:
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` with exactly ``labels``; None if the page has none."""
        return next((s.value for s in self.samples if s.name == name and s.labels == labels), None)

    def total(self, name: str) -> float:
        """The sum of ``name`` over all its label sets (0.0 if the page has none)."""
        return sum(s.value for s in self.samples if s.name == name)


def read_page(url: str, timeout: float = 5.0) -> MetricsPage:
    """The page at ``url`` (raises OSError when it cannot be read)."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return MetricsPage(answer.read().decode())
