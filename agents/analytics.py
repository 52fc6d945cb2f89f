"""Per-IP features from the decisions, in two batch stages, and detection when a window closes.

The decisions topic carries everything the features need (ip, user, request type, verdict, event
time) and is keyed by user, so the features are re-keyed by IP in two stages, each a batch aiokafka
consumer in its own group inside the Faust worker (a per-event Faust agent caps near 12k events/s;
see docs/analytics.md), on :class:`streams.folding.FoldingConsumer`:

1. :class:`agents.feature_stage.FeatureStage` (group ``<app_id>-analytics``; in a worker that also runs
   the limiter, fed by it in process instead of reading the topic) folds each ``decisions`` partition into
   per-window per-IP partials (:class:`WindowAggregator`). When the partition's event time (its
   largest ``ts_event`` minus ``analytics_grace``) passes a window's end, it publishes one
   :class:`schemas.flags.IpPartial` per IP to ``ip-features`` keyed by IP (the repartition step:
   once per window, IP and source partition, not per event), then a
   :class:`schemas.flags.FeaturesWatermark` to every ``ip-features`` partition. Markers are also
   repeated every ``flush_interval`` while the partition has traffic.
2. :class:`agents.merge_stage.MergeStage` (group ``<app_id>-analytics-ip``) merges the partials of its ``ip-features``
   partitions (:class:`WindowMerger`). A window closes by event time: when every source partition
   has marked it closed, or, a bounded wait, when the sources that have not have been silent for
   ``analytics_idle`` wall seconds (a *forced* close, logged and counted). Then the window's feature
   frame goes through :func:`agents.detectors.detect`, flags go to ``ip-flags`` keyed by IP and one
   :class:`schemas.flags.AbuseReport` to ``abuse-reports``. Partials that arrive after a forced
   close are merged and the window is reported again (``revision`` + 1).

Both stage 2 (its flags' ``allowlisted``) and the blocklist agent (no ban) ask one live
:class:`agents.allowlist.Allowlist`: the static ``RATEWARDEN_ALLOWLIST_CIDRS`` plus the compacted
``allowlist`` topic, which the service reads before the stages start and then follows.

State is bounded by event time: a stage holds only windows not yet closed (stage 1 counts and logs
events older than its closed windows; stage 2 keeps at most ``analytics_corrections_kept`` forced
windows for corrections). Offsets are committed up to the first record of the oldest window still
open, so a restarted or reassigned stage rebuilds its windows from the topic (at least once: a crash
between publishing and committing can publish a partial twice; stage 2 recognises the duplicate).
"""

import asyncio
import logging
from typing import Callable

from mode import Service

from agents.allowlist import Allowlist
from agents.ban_warden import register_blocklist_agent
from agents.blocklist import BanBook
from agents.control_tables import allowlist_table
from agents.feature_stage import FeatureStage
from agents.merge_stage import MergeStage
from streams.settings import Settings
from streams.stopping import WIND_DOWN_TIMEOUT
from streams.tables import ControlTable
from streams.topics import ensure_topics

__all__ = [
    "AnalyticsService",
    "FeatureStage",
    "MergeStage",
    "register_analytics",
]

logger = logging.getLogger(__name__)

class AnalyticsService(Service):
    """Runs both stages and the blocklist reader the blocklist agent decides against.

    ``fed``: stage 1 is fed in process by the limiter of this worker (the composition root attaches
    :attr:`features` to it) instead of reading the decisions topic in its group. ``allowlist`` and its
    table: the live allow-list stage 2 and the blocklist agent share (default: the static seed alone).
    """

    def __init__(self, settings: Settings, bans: BanBook, ban_table: ControlTable, fed: bool = False,
                 allowlist: Allowlist | None = None, allowed_table: ControlTable | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings, self.bans, self.ban_table = settings, bans, ban_table
        self.allowlist = allowlist if allowlist is not None else Allowlist(settings.allowlist)
        self.allowed_table = allowed_table if allowed_table is not None else allowlist_table(settings, self.allowlist)
        self.features = FeatureStage(settings, fed=fed)
        self.stages = [self.features, MergeStage(settings, allowlist=self.allowlist)]
        self._runs: list[asyncio.Future] = []

    async def on_start(self) -> None:
        partitions = await asyncio.to_thread(ensure_topics, self.settings)
        await self.ban_table.start(partitions[self.settings.blocklist_topic])
        await self.allowed_table.start(partitions[self.settings.allowlist_topic])
        await self.allowed_table.catch_up()  # stage 2 never judges a window without the runtime entries
        for stage in self.stages:
            await stage.start(partitions)

    async def on_started(self) -> None:
        self._runs = [asyncio.ensure_future(self.ban_table.run()), asyncio.ensure_future(self.allowed_table.run())]
        for stage in self.stages:
            self._runs.append(stage.supervise(self, f"analytics {stage.group}", stage.run_fed if stage.fed else stage.run))

    async def on_stop(self) -> None:
        """Both stages at once (each step of theirs is bounded: the broker may be gone), then the readers."""
        runs = self._runs[2:] or [None] * len(self.stages)
        await asyncio.gather(*(stage.wind_down(run, WIND_DOWN_TIMEOUT) for stage, run in zip(self.stages, runs)))
        for reader in self._runs[:2]:
            reader.cancel()  # the blocklist and allow-list readers follow their topics forever
        await asyncio.gather(*(stage.close() for stage in self.stages))
        await asyncio.gather(self.ban_table.stop(), self.allowed_table.stop())
        logger.info("analytics stopped: %s", [stage.stats for stage in self.stages])


def register_analytics(app, settings: Settings, feed: Callable[[FeatureStage], None] | None = None) -> None:
    """Add the analytics service and the blocklist agent to a Faust app. With ``feed``, stage 1 is fed in
    process: ``feed`` is given it when the service is made (to attach it to the worker's limiter)."""
    bans = BanBook()
    ban_table = ControlTable(settings, settings.blocklist_topic, bans.apply)
    allowlist = Allowlist(settings.allowlist)  # one object: stage 2's detectors and the blocklist agent
    allowed_table = allowlist_table(settings, allowlist)
    register_blocklist_agent(app, settings, bans, ban_table, allowlist, allowed_table)

    @app.service
    class BoundAnalyticsService(AnalyticsService):
        def __init__(self, **kwargs) -> None:
            super().__init__(settings, bans, ban_table, fed=feed is not None, allowlist=allowlist,
                             allowed_table=allowed_table, **kwargs)
            if feed is not None:
                feed(self.features)
