"""The event loop probe: a callback that holds the loop shows as a late timer; a stopped probe is silent."""

import asyncio
import time

from streams.loop_lag import LOOP_LAG, LoopLagProbe


async def _until(condition, bound: float = 10.0) -> None:
    """Let the loop run until ``condition()`` holds (a generous bound: a slow machine is not a failure)."""
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, "the probe never ticked"
        await asyncio.sleep(0.001)


def test_a_callback_that_holds_the_loop_shows_as_a_late_timer_and_a_stopped_probe_is_silent():
    seen: list[float] = []

    async def scenario() -> int:
        probe = LoopLagProbe(period=0.005, observe=seen.append)
        probe.start()
        await _until(lambda: len(seen) >= 3)
        before = len(seen)
        time.sleep(0.08)  # the stall under test: a callback holding the loop for 80 ms
        await _until(lambda: len(seen) > before)
        probe.stop()
        stopped = len(seen)
        await asyncio.sleep(0.05)  # ten periods: a stopped probe must not tick again
        return stopped

    stopped = asyncio.run(scenario())
    assert len(seen) == stopped
    assert all(lag >= 0 for lag in seen)
    assert max(seen) >= 0.07, seen  # due 5 ms after the previous tick, run only after the 80 ms stall


def test_by_default_the_probe_feeds_the_histogram():
    def count() -> float:
        return next(s.value for m in LOOP_LAG.collect() for s in m.samples if s.name.endswith("_count"))

    before = count()

    async def scenario() -> None:
        probe = LoopLagProbe(period=0.001)
        probe.start()
        await _until(lambda: count() >= before + 3)
        probe.stop()

    asyncio.run(scenario())
    assert count() >= before + 3
