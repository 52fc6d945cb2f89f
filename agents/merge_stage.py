"""Stage 2 of the analytics: partials merged per window, detection, flags and abuse reports.

:class:`agents.window_merger.WindowMerger` says when a window is complete (every source closed it)
or forced (a bounded wait for idle sources), and which kept windows late partials corrected; this
stage runs the detectors on each and publishes flags to ``ip-flags`` (keyed by IP) and one
:class:`schemas.flags.AbuseReport` to ``abuse-reports``, and exports what the merger counted. After
the flags of the windows its sources have closed, it marks every ``ip-flags`` partition with a
:class:`schemas.flags.FlagsWatermark` (how far bans are known: :mod:`agents.ban_horizon`).
"""

import asyncio
import json
import logging
import time
from typing import Callable

import msgspec

from agents.allowlist import Allowlist
from agents.batch_stage import BatchStage
from agents.crowd import CrowdBaseline
from agents.detectors import base_frame, detect
from agents.window_merger import MergedWindow, WindowMerger
from schemas.flags import AbuseReport, FeaturesWatermark, FlagsWatermark, IpFlag, IpPartial, ReportedIp, ReportShare
from streams.kafka_io import partition_for
from streams.metrics import ANALYTICS_FORCED, ANALYTICS_LATE_PARTIALS
from streams.settings import Settings

__all__ = ["MergeStage", "report"]

logger = logging.getLogger(__name__)


class MergeStage(BatchStage):
    """Stage 2: ``ip-features`` -> complete windows -> detectors -> ``ip-flags`` and ``abuse-reports``."""

    #: Partials arrive in bursts when windows close (once a minute per source): no need to poll for them.
    fetch_max_wait_ms = 200

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic,
                 allowlist: Allowlist | None = None) -> None:
        """``allowlist``: the live one the analytics service follows; default: the settings' static seed."""
        super().__init__(settings, clock=clock)
        s = settings
        self.topic, self.group = s.ip_features_topic, s.analytics_merge_group
        self.merger = WindowMerger(s.analytics_window, s.partitions, s.analytics_idle, s.analytics_corrections_kept)
        self._counted = dict(self.merger.counts)
        self.allowlist = allowlist if allowlist is not None else Allowlist(s.allowlist)
        self.baseline = CrowdBaseline(s.crowd_baseline_windows)
        self.decode = msgspec.json.Decoder(IpPartial | FeaturesWatermark).decode
        self._encode = msgspec.json.Encoder().encode
        self.marked: dict[int, float] = {}  # ip-features partition -> FlagsWatermark last sent
        self.stats.update(windows=0, flags=0)

    def on_start(self, partitions: dict[str, int]) -> None:
        self.merger.sources = partitions[self.settings.decisions_topic]
        self.flag_partitions = partitions[self.settings.ip_flags_topic]

    def assign(self, partition: int, progress: str | None) -> None:
        self.merger.assign(partition, self.clock(), json.loads(progress) if progress else None)

    def revoke(self, partition: int) -> None:
        self.merger.revoke(partition)
        self.marked.pop(partition, None)
        self.positions.pop(partition, None)

    async def process(self, partition: int, items, now: float) -> None:
        if partition not in self.merger.assigned:
            return
        merger = self.merger
        for offset, item in items:
            if type(item) is IpPartial:
                merger.add_partial(partition, offset, item)
            else:
                merger.add_mark(partition, item, now)

    async def publish_due(self, now: float) -> None:
        for window in self.merger.ready(now):
            await self.publish(window)
        self._count_late()
        await self.mark_flags(now)

    async def mark_flags(self, now: float) -> None:
        """After the flags: tell every ``ip-flags`` partition how far each owned partition's flags are complete."""
        for partition in sorted(self.merger.assigned):
            closed = self.merger.closed_until(partition, now)
            if closed is None or closed <= self.marked.get(partition, float("-inf")):
                continue
            self.marked[partition] = closed
            value = self._encode(FlagsWatermark(source=partition, closed_until=closed))
            for out in range(self.flag_partitions):
                await self.sender.add(self.settings.ip_flags_topic, out, None, value)

    def _count_late(self) -> None:
        """Log and export what the merger saw since the last tick: forced closes and late partials."""
        counts, counted = self.merger.counts, self._counted
        if counts == counted:
            return
        for outcome in ("corrected", "duplicate", "dropped"):
            if counts[outcome] > counted[outcome]:
                ANALYTICS_LATE_PARTIALS.labels(outcome).inc(counts[outcome] - counted[outcome])
        if counts["forced"] > counted["forced"]:
            ANALYTICS_FORCED.inc(counts["forced"] - counted["forced"])
        logger.log(
            logging.WARNING if counts["dropped"] > counted["dropped"] else logging.INFO,
            "analytics windows: %s (totals: forced closes, late partials by outcome)", counts,
        )
        self._counted = dict(counts)

    async def publish(self, window: MergedWindow) -> None:
        """Flag and report one window. The analysis (rows, pandas frame, detectors, report) runs in a thread:
        on the event loop a window took 80 ms here, and the limiter sharing the loop answered no inline
        request meanwhile; from a thread the loop takes the interpreter back every few ms. Nothing else
        touches the window or the baseline meanwhile: this runs in :meth:`tick`, under the stage's lock."""
        s = self.settings
        start, ips = window.start, window.ips
        end = start + s.analytics_window
        if window.missing and not window.revision:
            logger.warning("window %.0f forced out after %.0f s without sources %s", start, s.analytics_idle, window.missing)
        flags, summary = await asyncio.to_thread(self._analyse, window, end)
        for flag in flags:
            key = flag.ip.encode()
            await self.sender.add(s.ip_flags_topic, partition_for(key, self.flag_partitions), key, self._encode(flag))
        await self.sender.add(s.abuse_reports_topic, 0, repr(start).encode(), self._encode(summary))
        self.stats["windows"] += 1
        self.stats["flags"] += len(flags)
        if flags:
            logger.info(
                "window %.0f (revision %d): %d subjects, flagged %s",
                start, window.revision, len(ips), [(f.ip, f.rules, f.severity) for f in flags[:10]],
            )

    def _analyse(self, window: MergedWindow, end: float) -> tuple[list[IpFlag], AbuseReport]:
        frame = base_frame(acc.row(ip) for ip, acc in window.ips.items())
        flags, stats, scored = detect(frame, window.start, end, self.settings.detectors, self.allowlist, self.baseline)
        return flags, report(window, end, sorted(window.partitions), scored, flags, stats)

    def commit_offsets(self) -> dict[int, tuple[int, str]]:
        return {
            p: (self.merger.commit_offset(p, position), json.dumps(self.merger.progress(p)))
            for p, position in self.positions.items()
            if p in self.merger.assigned
        }


def report(window: MergedWindow, end, partitions, scored, flags: list[IpFlag], stats) -> AbuseReport:
    shares = []  # addresses only: a network's counts are its addresses' again
    for partition in partitions:
        ips = [a for a in window.parts.get(partition, {}).values() if a.kind == "ip"]
        shares.append(ReportShare(partition, len(ips), sum(a.requests for a in ips), sum(a.throttled + a.blocked for a in ips)))
    scored = scored[scored["kind"] == "ip"] if len(scored) else scored
    return AbuseReport(
        window_start=window.start,
        window_end=end,
        partitions=partitions,
        ips=len(scored),
        requests=int(scored["requests"].sum()) if len(scored) else 0,
        refused=int((scored["throttled"] + scored["blocked"]).sum()) if len(scored) else 0,
        flagged=[
            ReportedIp(f.ip, f.score, f.rules, f.features.requests, f.features.users, f.allowlisted, f.kind, f.severity)
            for f in flags
        ],
        population=stats,
        late_partials=window.late,
        revision=window.revision,
        missing_sources=window.missing,
        shares=shares,
    )
