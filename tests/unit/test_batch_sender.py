"""BatchSender: a batch whose partition's previous batch is undelivered stays open (``hold``) and goes
when that delivery completes; hand_off sends everything; order within a partition is kept."""

import asyncio

import pytest

from kafka_fakes import FakeBroker, FakeProducer
from streams.kafka_io import BatchSender

TOPIC = "decisions"


def values(broker: FakeBroker, partition: int = 0) -> list[bytes]:
    return [entry.value for entry in broker.log(TOPIC, partition)]


async def one_held(broker: FakeBroker) -> BatchSender:
    """A holding sender whose partition 0 has "1" sent and undelivered, and "2" open behind it."""
    sender = BatchSender(FakeProducer(broker), hold=True)
    broker.acknowledge = False  # deliveries wait for confirm()
    await sender.add(TOPIC, 0, b"k", b"1")
    await sender.send_all()
    await sender.add(TOPIC, 0, b"k", b"2")
    await sender.send_all()
    return sender


async def settle() -> None:
    for _ in range(5):  # the done callback schedules a task: let both run
        await asyncio.sleep(0)


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


def test_a_batch_behind_an_undelivered_one_waits_then_goes_on_delivery(broker):
    async def scenario():
        sender = BatchSender(FakeProducer(broker), hold=True)
        broker.acknowledge = False  # deliveries wait for confirm()
        await sender.add(TOPIC, 0, b"k", b"1")
        await sender.send_all()
        assert values(broker) == [b"1"]
        await sender.add(TOPIC, 0, b"k", b"2")
        await sender.send_all()  # partition 0's first batch is undelivered: this one stays open
        await sender.add(TOPIC, 0, b"k", b"3")  # and the next fetch's records join it
        await sender.add(TOPIC, 1, b"k", b"x")  # another partition is not held up
        await sender.send_all()
        await settle()
        assert values(broker) == [b"1"] and values(broker, 1) == [b"x"]
        broker.confirm()
        await settle()
        assert values(broker) == [b"1", b"2", b"3"]  # sent as soon as the first was delivered, in order
        ends = await BatchSender.delivered(await sender.hand_off())
        assert ends == {(TOPIC, 0): 3, (TOPIC, 1): 1}

    asyncio.run(scenario())


def test_hand_off_sends_held_batches_at_once(broker):
    async def scenario():
        sender = await one_held(broker)
        pending = await sender.hand_off()  # a flush: every record counted so far must be in it
        assert values(broker) == [b"1", b"2"]
        assert [size for _, size, _ in pending] == [1, 1]
        broker.confirm()
        assert await BatchSender.delivered(pending) == {(TOPIC, 0): 2}
        await settle()  # the held batch's callback finds nothing left to send
        assert values(broker) == [b"1", b"2"]
        assert await sender.hand_off() == []

    asyncio.run(scenario())


def test_a_newer_batch_sent_by_hand_off_is_waited_for_too(broker):
    async def scenario():
        sender = await one_held(broker)  # "2" held behind "1"
        first = await sender.hand_off()  # sends "2" now
        await sender.add(TOPIC, 0, b"k", b"3")
        await sender.send_all()  # behind "2": stays open
        held = broker.held[:]
        broker.held[:] = held[:1]
        broker.confirm()  # only "1" is delivered: "3" must still wait for "2"
        await settle()
        assert values(broker) == [b"1", b"2"]
        broker.acknowledge = False
        for future, metadata in held[1:]:
            future.set_result(metadata)
        await settle()
        assert values(broker) == [b"1", b"2", b"3"]
        broker.confirm()
        assert await BatchSender.delivered(first) == {(TOPIC, 0): 2}

    asyncio.run(scenario())


def test_without_hold_every_open_batch_goes_at_once(broker):
    async def scenario():
        sender = BatchSender(FakeProducer(broker))
        broker.acknowledge = False
        for value in (b"1", b"2"):
            await sender.add(TOPIC, 0, b"k", value)
            await sender.send_all()
        assert values(broker) == [b"1", b"2"]
        broker.confirm()

    asyncio.run(scenario())
