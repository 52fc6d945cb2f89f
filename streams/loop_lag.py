"""How late the event loop runs a timer: the stalls that every task of the process waits through.

A process serving inline decisions answers no faster than its event loop turns. A callback that
runs for 20 ms (a flush done in one piece, a garbage collection, a report built with pandas) delays
every request, fetch and reply that arrives meanwhile, and shows in the gateway's p99, not in any
average. :class:`LoopLagProbe` schedules a timer every ``period`` seconds and records how late each
one ran in ``ratewarden_event_loop_lag_seconds`` (served with the process's other metrics: the
worker's ``--metrics-port``, the gateway's ``/metrics``). A timer costs about 6 us here: at 100 a
second, under 0.1% of a core. Lateness includes time the process waited for a CPU: on a machine
with more busy processes than cores, part of it is the operating system's scheduling, not this
process's code.
"""

import asyncio
import logging

from mode import Service
from prometheus_client import Histogram

__all__ = ["LOOP_LAG", "LoopLagProbe", "LoopLagService", "PERIOD"]

logger = logging.getLogger(__name__)

#: Seconds between two timers of the probe.
PERIOD = 0.01

LOOP_LAG = Histogram(
    "ratewarden_event_loop_lag_seconds",
    "How late the event loop ran a timer due every 10 ms (the stalls every request and reply waits through)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class LoopLagProbe:
    """``observe``: where each lateness goes (the histogram's ``observe`` unless given, e.g. by a test)."""

    def __init__(self, period: float = PERIOD, observe=None) -> None:
        self.period = period
        self.observe = observe or LOOP_LAG.observe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        """Start probing the running loop (call from inside it)."""
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + self.period
        self._timer = self._loop.call_at(self._due, self._tick)
        logger.debug("event loop lag probe every %.0f ms", self.period * 1000)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now = self._loop.time()
        self.observe(max(0.0, now - self._due))
        self._due = now + self.period
        self._timer = self._loop.call_at(self._due, self._tick)


class LoopLagService(Service):
    """A worker's probe, whatever roles it runs: started with the worker's services, stopped with them."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.probe = LoopLagProbe()

    async def on_started(self) -> None:
        self.probe.start()

    async def on_stop(self) -> None:
        self.probe.stop()
