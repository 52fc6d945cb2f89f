"""The gateway's outbox without a broker: one batch per partition per turn, at most MAX_IN_FLIGHT awaited."""

import asyncio

import pytest

from ratewarden.gateway import outbox as outbox_module
from ratewarden.gateway.outbox import MAX_IN_FLIGHT, Outbox
from schemas.events import RequestEvent


class Batch:
    def __init__(self) -> None:
        self.records = []

    def append(self, key, value, timestamp, headers):
        self.records.append((key, headers))
        return True


class Producer:
    def __init__(self, refuse: bool = False) -> None:
        self.sent: list[tuple[int, int]] = []  # (partition, records)
        self.refuse = refuse

    def create_batch(self):
        return Batch()

    async def send_batch(self, batch, topic, partition):
        if self.refuse:
            raise ConnectionError("broker gone")
        self.sent.append((partition, len(batch.records)))
        delivery = asyncio.get_running_loop().create_future()
        delivery.set_result(None)
        return delivery


def event(i: int) -> RequestEvent:
    return RequestEvent(f"r{i}", f"user-{i}", "192.0.2.1", "read", 1.0)


async def turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_batches_wait_while_max_in_flight_are_awaited_and_go_when_one_lands():
    producer = Producer()
    box = Outbox(producer, "requests", 4, [("h", b"v")])
    loop = asyncio.get_running_loop()
    flights = []
    for n in range(MAX_IN_FLIGHT):
        futures = [loop.create_future() for _ in range(8)]
        for i, future in enumerate(futures):
            box.put(event(n * 100 + i), future)
        flights.append(futures)
        await turn()
    assert box.in_flight == MAX_IN_FLIGHT and sum(n for _, n in producer.sent) == 8 * MAX_IN_FLIGHT
    late = loop.create_future()
    box.put(event(999), late)
    await turn()
    assert sum(n for _, n in producer.sent) == 8 * MAX_IN_FLIGHT, "held while the flights are awaited"
    for future in flights[0]:
        future.set_result(None)  # the first flight's decisions are back
    await turn()
    assert sum(n for _, n in producer.sent) == 8 * MAX_IN_FLIGHT + 1
    assert len({p for p, _ in producer.sent}) > 1, "one batch per partition"


@pytest.mark.asyncio
async def test_a_flight_missing_decisions_stops_holding_after_the_hold_limit(monkeypatch):
    monkeypatch.setattr(outbox_module, "HOLD_LIMIT", 0.01)
    box = Outbox(Producer(), "requests", 1, [])
    loop = asyncio.get_running_loop()
    for n in range(MAX_IN_FLIGHT):
        box.put(event(n), loop.create_future())  # never answered
        await turn()
    box.put(event(99), loop.create_future())
    await turn()
    assert box.in_flight == MAX_IN_FLIGHT
    await asyncio.sleep(0.05)
    assert len(box.producer.sent) == MAX_IN_FLIGHT + 1 and box.in_flight == 0


@pytest.mark.asyncio
async def test_a_refused_batch_fails_its_requests_futures():
    box = Outbox(Producer(refuse=True), "requests", 2, [])
    future = asyncio.get_running_loop().create_future()
    box.put(event(1), future)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(future, 1)
