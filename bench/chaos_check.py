"""The chaos soak's verdict: what the topics hold after the run, read ``read_committed``.

* **Exactly one decision per request**: every ``request_id`` in the requests topic (what was
  published: the load's producer is idempotent, so a request is stored once) has exactly one
  committed decision; missing, duplicated and unknown ids are counted.
* **Allowed never exceeds the limit** per (user, fixed window), the window taken from the event's
  own time (``floor(ts_event / window)``), independently of what the limiter says it used.
* **Abuse reports count every request once**: a window is reported once per analytics shard (the
  ``ip-features`` partitions a worker's stage 2 owns) and may be reported again (a correction,
  ``revision`` + 1, or a shard that took partitions over); each report splits its counts by
  partition (``shares``) and the newest share per (window, partition) is what counts, as
  :func:`ratewarden.abuse_reports.window_totals` (the project's one reader) adds it up. Per window,
  every ``ip-features`` partition must have a share and the total ``requests`` must equal the
  number of published events whose ``ts`` falls in the window. Only windows fully inside the run are
  compared: the window must start at or after the first event, and end at least
  ``analytics_grace`` before the last event (stage 1 closes a window only when event time passes its
  end plus the grace, and event time stops with the load). The first and last windows are left out.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import msgspec

from bench.kafka_read import TopicReader
from ratewarden.abuse_reports import window_totals
from schemas.decisions import Decision
from schemas.events import RequestEvent
from schemas.flags import AbuseReport
from streams.settings import Settings

__all__ = ["Verdict", "eligible_windows", "read_reports", "verify"]

_SHOW = 20  # violations of one kind listed in full; the counts cover all


@dataclass
class Verdict:
    """Counts for every check, and the violations found (each a short line of evidence)."""

    published: int = 0
    decisions: int = 0
    missing: int = 0
    duplicates: int = 0
    stored_twice: int = 0  # requests the load's producer stored more than once (would void the check)
    unknown: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    user_windows: int = 0
    over_limit: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    reports: int = 0
    windows_compared: int = 0
    windows_mismatched: int = 0
    windows_unreported: int = 0
    windows_reported_twice: int = 0  # a partition in more than one report: corrections, or a takeover
    windows_forced: int = 0  # some report of the window names missing sources
    violations: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, line: str) -> None:
        self.violations.setdefault(kind, []).append(line)

    @property
    def violation_count(self) -> int:
        return self.missing + self.duplicates + self.stored_twice + self.unknown + self.over_limit + self.windows_mismatched \
            + self.windows_unreported

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "violations"}
        out["violation_count"] = self.violation_count
        out["violations"] = {kind: lines[:_SHOW * 10] for kind, lines in self.violations.items()}
        return out


def eligible_windows(first_ts: float, last_ts: float, window: float, grace: float) -> list[float]:
    """Starts of the analytics windows fully inside the run (module docstring)."""
    start = math.ceil(first_ts / window) * window
    out = []
    while start + window + grace <= last_ts:
        out.append(start)
        start += window
    return out


def read_reports(bootstrap: str, topic: str) -> list[AbuseReport]:
    """Every committed abuse report, in topic order (the topic has one partition)."""
    reader = TopicReader(bootstrap, topic)
    try:
        decode = msgspec.json.Decoder(AbuseReport).decode
        return [decode(r.value) for r in reader.read()]
    finally:
        reader.close()


def _read(bootstrap: str, topic: str, kind: type) -> list:
    reader = TopicReader(bootstrap, topic)
    try:
        decode = msgspec.json.Decoder(kind).decode
        return [decode(r.value) for r in reader.read(timeout=600.0)]
    finally:
        reader.close()


def verify(settings: Settings, bootstrap: str) -> Verdict:
    """Read requests, decisions and abuse reports; check them (module docstring)."""
    verdict = Verdict()
    requests = _read(bootstrap, settings.requests_topic, RequestEvent)
    decisions = _read(bootstrap, settings.decisions_topic, Decision)
    verdict.published, verdict.decisions = len(requests), len(decisions)
    published = Counter(r.request_id for r in requests)
    for request_id, n in published.items():
        if n > 1:
            verdict.stored_twice += n - 1
            verdict.add("request stored more than once (load generator)", f"{request_id}: {n} times")
    decided = Counter(d.request_id for d in decisions)
    for request_id in published:
        n = decided.get(request_id, 0)
        if n == 0:
            verdict.missing += 1
            verdict.add("missing decision", request_id)
        elif n > 1:
            verdict.duplicates += n - 1
            verdict.add("duplicate decisions", f"{request_id}: {n} committed decisions")
    for request_id in decided.keys() - published.keys():
        verdict.unknown += decided[request_id]
        verdict.add("decision for an unknown request", request_id)
    verdict.verdicts = dict(Counter(d.verdict for d in decisions))
    _check_limits(verdict, decisions, settings.default_limit, settings.default_window)
    if requests:
        verdict.first_ts = min(r.ts for r in requests)
        verdict.last_ts = max(r.ts for r in requests)
        _check_reports(verdict, requests, read_reports(bootstrap, settings.abuse_reports_topic), settings)
    return verdict


def _check_limits(verdict: Verdict, decisions: list, limit: int, window: float) -> None:
    allowed: Counter = Counter()
    seen: set = set()
    for d in decisions:
        key = (d.user_id, math.floor(d.ts_event / window))
        seen.add(key)
        if d.verdict == "allow":
            allowed[key] += 1
    verdict.user_windows = len(seen)
    for (user, index), n in sorted(allowed.items()):
        if n > limit:
            verdict.over_limit += 1
            verdict.add("allowed above the limit", f"{user}, window [{index * window:.0f}, {(index + 1) * window:.0f}):"
                                                  f" {n} allowed, limit {limit}")


def _check_reports(verdict: Verdict, requests: list, reports: list[AbuseReport], settings: Settings) -> None:
    window, partitions = settings.analytics_window, set(range(settings.partitions))
    counts = Counter(math.floor(r.ts / window) * window for r in requests)
    by_window: dict[float, list[AbuseReport]] = defaultdict(list)
    for report in reports:
        by_window[report.window_start].append(report)
    totals = window_totals(reports)
    verdict.reports = len(reports)
    verdict.windows_reported_twice = sum(max(Counter(p for r in v for p in r.partitions).values()) > 1
                                         for v in by_window.values())
    verdict.windows_forced = sum(any(r.missing_sources for r in v) for v in by_window.values())
    for start in eligible_windows(verdict.first_ts, verdict.last_ts, window, settings.analytics_grace):
        verdict.windows_compared += 1
        expected = counts.get(start, 0)
        reported = by_window.get(start)
        if not reported:
            verdict.windows_unreported += 1
            verdict.add("abuse report missing", f"window {start:.0f}: {expected} requests published, no report")
            continue
        shared = {share.partition for r in reported for share in r.shares}
        total = totals.get(start, {}).get("requests", 0)
        if total != expected or shared != partitions:
            verdict.windows_mismatched += 1
            history = "; ".join(
                f"partitions {r.partitions}: {r.requests} (revision {r.revision}, late partials {r.late_partials}, "
                f"missing sources {r.missing_sources}, shares {[(x.partition, x.requests) for x in r.shares]})"
                for r in reported)
            verdict.add("abuse report count wrong",
                        f"window {start:.0f}: {expected} requests published, the newest shares add up to {total} "
                        f"(partitions with a share: {sorted(shared)}); reports in topic order: {history}")
