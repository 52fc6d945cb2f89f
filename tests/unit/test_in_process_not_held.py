"""A feed for a partition this process does not hold (given up, or closing) is not folded, and is
counted and logged: its next owner reads those records from the topic (no broker needed)."""

import asyncio
import logging

from streams.folding import FoldingConsumer
from streams.in_process import FOLDED, _Fed
from streams.settings import Settings


class Recorder(FoldingConsumer):
    topic = "decisions"

    def __init__(self) -> None:
        super().__init__(Settings(), fed=True)
        self.folded: list[tuple[int, list]] = []

    async def fold(self, partition, items, end) -> None:
        self.folded.append((partition, list(items)))


def test_a_feed_for_a_partition_not_held_is_counted_logged_and_not_folded(caplog):
    consumer = Recorder()
    consumer._fed[0] = _Fed(position=10)  # partition 0 held and live; partition 1 not held
    before = FOLDED.labels("decisions", "not_held")._value.get()

    async def scenario() -> None:
        await consumer.feed(1, 5, ["a", "b", "c"], 8)
        await consumer.feed(0, 10, ["d"], 11)

    with caplog.at_level(logging.INFO, logger="streams.in_process"):
        asyncio.run(scenario())
    assert consumer.folded == [(0, [(10, "d")])]
    assert consumer.stats["not_held"] == 3 and consumer.stats["fed"] == 1
    assert FOLDED.labels("decisions", "not_held")._value.get() - before == 3
    assert "partition 1 is not held here: 3 fed records" in caplog.text


def test_a_feed_lets_the_loop_serve_others_after_every_slice_the_last_included():
    """A flush feeds each partition in turn: without a step after the last slice, a second's feeds of
    every partition ran in one piece, and the limiter sharing the loop waited for all of them."""
    consumer, ticks, steps = Recorder(), [0], []
    consumer.fed_slice = 2
    consumer._fed[0], consumer._fed[1] = _Fed(position=0), _Fed(position=0)

    async def fold(partition, items, end) -> None:
        steps.append((partition, end, ticks[0]))

    consumer.fold = fold

    async def scenario() -> None:
        running = True

        async def other_task() -> None:
            while running:
                ticks[0] += 1
                await asyncio.sleep(0)

        other = asyncio.ensure_future(other_task())
        await asyncio.sleep(0)
        await consumer.feed(0, 0, ["a", "b", "c"], 3)
        await consumer.feed(1, 0, ["d"], 1)
        running = False
        await other

    asyncio.run(scenario())
    assert [(p, end) for p, end, _ in steps] == [(0, 2), (0, 3), (1, 1)]
    assert steps[0][2] < steps[1][2] < steps[2][2]
    assert consumer.stats["fed"] == 4
