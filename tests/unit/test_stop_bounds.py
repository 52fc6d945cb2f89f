"""Bounded stop steps (streams.stopping) and a batch consumer's wind-down, without a broker."""

import asyncio

from streams import stopping
from streams.batch_consumer import BatchConsumer
from streams.settings import Settings


async def test_a_stop_step_that_hangs_is_abandoned_after_its_bound_and_logged(monkeypatch, caplog):
    monkeypatch.setattr(stopping, "STOP_STEP_TIMEOUT", 0.05)
    never = asyncio.get_running_loop().create_future()
    assert not await asyncio.wait_for(stopping.bounded("the gateway", "the outbox", never), 1)
    assert never.cancelled() and "stopping the gateway: the outbox took over" in caplog.text


async def test_a_step_that_fails_or_raises_cancelled_from_within_is_abandoned_and_the_stop_goes_on(caplog):
    async def cancelled_inside():  # aiokafka's consumer stop with the broker gone
        raise asyncio.CancelledError()

    async def fails():
        raise ConnectionError("gone")

    assert not await stopping.bounded("w", "its consumer", cancelled_inside())
    assert not await stopping.bounded("w", "its producer", fails())
    assert await stopping.bounded("w", "a quick step", asyncio.sleep(0))
    assert "stopping w: its consumer failed (CancelledError())" in caplog.text
    assert "stopping w: its producer failed (ConnectionError('gone'))" in caplog.text


async def test_cancelling_the_caller_still_cancels_it():
    step = asyncio.ensure_future(stopping.bounded("w", "a long step", asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    step.cancel()
    try:
        await step
    except asyncio.CancelledError:
        return
    raise AssertionError("the caller's cancellation was swallowed")


async def test_wind_down_cancels_a_loop_stuck_on_kafka_and_frees_the_lock(caplog):
    consumer = BatchConsumer(Settings())
    consumer.topic, consumer.group = "t", "g"

    async def stuck_in_a_commit():
        async with consumer.lock:
            await asyncio.Event().wait()

    loop = asyncio.ensure_future(stuck_in_a_commit())
    await asyncio.sleep(0)
    await asyncio.wait_for(consumer.wind_down(loop, 0.05), 5)
    assert loop.cancelled() and consumer.abandoned and not consumer.lock.locked()
    assert "stopping g: its loop took over 0.05 s to finish a batch; cancelled" in caplog.text


async def test_wind_down_leaves_a_loop_that_finishes_its_batch_alone():
    consumer = BatchConsumer(Settings())
    consumer.topic, consumer.group = "t", "g"

    async def one_batch():
        while not consumer.stopping:
            await asyncio.sleep(0.01)

    loop = asyncio.ensure_future(one_batch())
    await consumer.wind_down(loop, 5)
    assert loop.done() and not loop.cancelled() and not consumer.abandoned


async def test_a_tail_readers_close_is_bounded_and_goes_on_in_the_background(monkeypatch, caplog):
    from streams import topic_tail

    class SlowConsumer:
        stopped = False

        async def stop(self):
            await asyncio.sleep(0.2)
            self.stopped = True

    class BrokenConsumer:
        async def stop(self):  # aiokafka's consumer stop with the broker gone
            raise asyncio.CancelledError()

    monkeypatch.setattr(topic_tail, "CLOSE_TIMEOUT", 0.02)
    slow = SlowConsumer()
    await asyncio.wait_for(topic_tail.close_consumer(slow), 1)
    assert not slow.stopped and "a tail reader: its consumer took over" in caplog.text
    await asyncio.sleep(0.3)
    assert slow.stopped  # not cancelled: the close finished in the background
    await asyncio.wait_for(topic_tail.close_consumer(BrokenConsumer()), 1)
