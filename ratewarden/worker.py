"""The Faust application: worker lifecycle, the replicated control tables, and the limiter task.

Faust runs the process (signals, logging, services, the worker command). The hot path is the
:class:`agents.limiter.Limiter`, started here as a service of the app; see docs/architecture.md for
why it owns its consumer rather than being a per-event Faust agent.
"""

import asyncio
import logging

import faust
from mode import Service

from agents.ban_gate import BanGate
from agents.blocklist_entries import Blocklist
from agents.control_tables import blocklist_table, limits_table
from agents.descriptor_counter import DescriptorCounter
from agents.history import HistoryService
from agents.limiter import Limiter
from agents.rules import LimitBook
from ratewarden.processes import freeze_startup_heap
from streams.kafka_config import faust_credentials, resolve_bootstrap
from streams.loop_lag import LoopLagService
from streams.settings import Settings, get_settings
from streams.stopping import STOP_STEP_TIMEOUT, WIND_DOWN_TIMEOUT
from streams.topics import ensure_topics

__all__ = [
    "bound_consumer_thread_stop", "create_app", "InProcessFeeds", "LimiterService", "RlsService", "run_worker",
]

logger = logging.getLogger(__name__)


class InProcessFeeds:
    """The worker's consumers of the decisions that its limiter feeds in process, wired as their services
    are made (Faust makes the services when the worker starts, the limiter's first)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.limiter: Limiter | None = None
        self._waiting: list = []

    def limiter_made(self, limiter: Limiter) -> None:
        self.limiter, limiter.expected_feeds = limiter, self.expected  # it subscribes once they are ready
        for consumer in self._waiting:
            limiter.attach(consumer)
        self._waiting.clear()

    def consumer_made(self, consumer) -> None:
        if self.limiter is None:
            self._waiting.append(consumer)
        else:
            self.limiter.attach(consumer)


class LimiterService(Service):
    """Loads limits and the blocklist, then runs the limiter until the worker stops."""

    def __init__(self, settings: Settings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.limits = LimitBook(settings.default_limit, settings.default_window, settings.default_algorithm)
        self.blocklist = Blocklist()
        gate = BanGate.from_settings(settings)  # ban_timing=event_time: wait for the analytics' bans
        self.tables = [limits_table(settings, self.limits), blocklist_table(settings, self.blocklist, gate)]
        self.limiter = Limiter(settings, self.limits, self.blocklist, gate=gate)

    async def on_start(self) -> None:
        partitions = await asyncio.to_thread(ensure_topics, self.settings)
        for table in self.tables:
            await table.start(partitions[table.topic])
            await table.catch_up()
        self.limiter.replies.partitions = partitions[self.settings.replies_topic]
        await self.limiter.start()
        logger.info("limiter started: %d limits, %d blocklist entries", len(self.limits), len(self.blocklist))

    async def on_started(self) -> None:
        freeze_startup_heap()
        self._table_tasks = [asyncio.ensure_future(table.run()) for table in self.tables]
        self._decide = self.limiter.supervise(self, "limiter")  # a crash stops the worker: its supervisor restarts it

    async def on_stop(self) -> None:
        """Let the limiter finish its batch, flush state and offsets, then close the clients."""
        await self.limiter.wind_down(getattr(self, "_decide", None), WIND_DOWN_TIMEOUT)
        for task in getattr(self, "_table_tasks", ()):
            task.cancel()
        await self.limiter.close()
        for table in self.tables:
            await table.stop()
        logger.info("limiter stopped after %s", self.limiter.stats)


class RlsService(Service):
    """Runs the rate limit service's descriptor counter (the ``rls`` role) until the worker stops."""

    def __init__(self, settings: Settings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.counter = DescriptorCounter(settings)
        # An idle hits topic must not cost a fetch every few ms: the broker answers a held fetch as
        # soon as a hit arrives, so a long wait costs no latency.
        self.counter.fetch_max_wait_ms = 500

    async def on_start(self) -> None:
        partitions = await asyncio.to_thread(ensure_topics, self.settings)
        self.counter.replies.partitions = partitions[self.settings.replies_topic]
        await self.counter.start()

    async def on_started(self) -> None:
        self._count = self.counter.supervise(self, "rls counter")

    async def on_stop(self) -> None:
        await self.counter.wind_down(getattr(self, "_count", None), WIND_DOWN_TIMEOUT)
        await self.counter.close()
        logger.info("rls counter stopped after %s", self.counter.stats)


def create_app(settings: Settings | None = None) -> faust.App:
    """A Faust app whose worker runs the enabled roles: limiter, rls, history, analytics (all by default).

    Run beside the limiter (the default), the history and the first analytics stage are fed the
    limiter's decisions in process, once each flush is delivered (committed); run without it
    (``ratewarden worker --roles history,analytics``), each reads the decisions topic in its own
    consumer group. Decisions partition ``p`` is written only by the owner of requests partition
    ``p``, so either way each partition's history and features are kept by one worker.
    """
    settings = settings or get_settings()
    (settings.var_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{resolve_bootstrap(settings)}",  # with security configured: the login is checked first
        broker_credentials=faust_credentials(settings),
        datadir=str(settings.var_dir / "faust"),
        topic_partitions=settings.partitions,
        web_enabled=False,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )

    app.service(LoopLagService)  # ratewarden_event_loop_lag_seconds: the stalls inline requests wait through
    feeds = None
    if settings.limiter_enabled:
        feeds = InProcessFeeds(int(settings.history_enabled) + int(settings.analytics_enabled))

        @app.service
        class BoundLimiterService(LimiterService):
            def __init__(self, **kwargs) -> None:
                super().__init__(settings, **kwargs)
                feeds.limiter_made(self.limiter)

    if settings.rls_enabled:
        @app.service
        class BoundRlsService(RlsService):  # descriptor hits of the rate limit service (docs/rls.md)
            def __init__(self, **kwargs) -> None:
                super().__init__(settings, **kwargs)

    if settings.history_enabled:
        @app.service
        class BoundHistoryService(HistoryService):  # serves GET /requests/{user_id} to the gateway
            def __init__(self, **kwargs) -> None:
                super().__init__(settings, fed=feeds is not None, **kwargs)
                if feeds is not None:
                    feeds.consumer_made(self.keeper)

    if settings.analytics_enabled:  # per-IP features, detectors, blocklist agent: docs/analytics.md
        from agents.analytics import register_analytics  # imports pandas: only where analytics run

        register_analytics(app, settings, feeds.consumer_made if feeds is not None else None)
    return app


def bound_consumer_thread_stop(app: faust.App) -> None:
    """Bound the stop of Faust's consumer thread (the blocklist agent's consumer) at :data:`STOP_STEP_TIMEOUT`.

    With the broker gone, aiokafka's consumer stop in that thread raises CancelledError (a fetch it
    awaits was cancelled), which ``mode`` does not expect: the thread never reports its shutdown and
    the worker waits the thread's ``shutdown_timeout``, 60 s by default. Past the bound ``mode`` logs
    the TimeoutError and the stop goes on; with the broker up the thread stops well inside it.
    """
    app.consumer._thread.shutdown_timeout = STOP_STEP_TIMEOUT


def run_worker(settings: Settings | None = None, loglevel: str = "info") -> None:
    """Run one worker process until SIGINT/SIGTERM.

    The topics are checked before Faust starts: wrongly partitioned ones raise
    :class:`streams.topics.TopicsError` (one line from the CLI, exit status 1) instead of a worker that
    crashes on start-up with a traceback.
    """
    settings = settings or get_settings()
    ensure_topics(settings)
    app = create_app(settings)
    bound_consumer_thread_stop(app)
    worker = faust.Worker(app, loglevel=loglevel)
    # At WARN and above Faust's start-up spinner sets the root logger to DEBUG for good, so every
    # debug call of aiokafka on the hot path builds a record that is then filtered out (~2% of a worker).
    worker.spinner = None
    worker.execute_from_commandline()
