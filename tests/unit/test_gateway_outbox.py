"""The gateway's outbox and waiting callers without a broker: batches per partition, flights, refusals."""

import asyncio

import pytest

from ratewarden.gateway import outbox as outbox_module
from ratewarden.gateway.outbox import FULL_BATCH, MAX_IN_FLIGHT, Outbox
from ratewarden.gateway.waiting import Waiting
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


def sent(box: Outbox) -> int:
    return sum(n for _, n in box.producer.sent)


async def turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_small_batches_wait_while_max_in_flight_and_go_when_replies_land():
    box = Outbox(Producer(), "requests", 4, [("h", b"v")])
    for n in range(MAX_IN_FLIGHT):
        waiting = Waiting(8)
        for i in range(8):
            box.put(event(n * 100 + i), waiting, i)
        await turn()
    assert box.in_flight == MAX_IN_FLIGHT and sent(box) == 8 * MAX_IN_FLIGHT
    assert len({p for p, _ in box.producer.sent}) > 1, "one batch per partition"
    box.put(event(999), Waiting(1), 0)
    await turn()
    assert sent(box) == 8 * MAX_IN_FLIGHT, "held while the flights are awaited"
    for _ in range(8):
        box.landed(1)  # the first flight's replies are back
    await turn()
    assert sent(box) == 8 * MAX_IN_FLIGHT + 1 and box.in_flight == MAX_IN_FLIGHT


async def test_a_full_batch_goes_at_once_and_is_not_a_flight():
    box = Outbox(Producer(), "requests", 4, [])
    for n in range(MAX_IN_FLIGHT):
        box.put(event(n), Waiting(1), 0)
        await turn()
    waiting = Waiting(FULL_BATCH)
    for i in range(FULL_BATCH):
        box.put(event(1000 + i), waiting, i)
    await turn()
    assert sent(box) == MAX_IN_FLIGHT + FULL_BATCH and box.in_flight == MAX_IN_FLIGHT


async def test_a_flight_missing_replies_stops_holding_after_the_hold_limit(monkeypatch):
    monkeypatch.setattr(outbox_module, "HOLD_LIMIT", 0.01)
    box = Outbox(Producer(), "requests", 1, [])
    for n in range(MAX_IN_FLIGHT + 1):
        box.put(event(n), Waiting(1), 0)  # never answered
        await turn()
    assert sent(box) == MAX_IN_FLIGHT
    await asyncio.sleep(0.05)
    assert sent(box) == MAX_IN_FLIGHT + 1 and box.in_flight == 0


async def test_a_refused_batch_gives_its_requests_up_at_once_counted_and_logged(caplog):
    box = Outbox(Producer(refuse=True), "requests", 2, [])
    waiting = Waiting(2)
    box.put(event(1), waiting, 0)
    box.put(event(2), waiting, 1)
    await asyncio.wait_for(waiting.done, 1)
    assert waiting.decisions == [None, None]
    assert box.refused == 2 and "not published to requests" in caplog.text and "broker gone" in caplog.text


async def test_waiting_fills_in_request_order_and_ignores_a_second_decision():
    waiting = Waiting(3)
    waiting.land(2, "c")
    waiting.land(0, "a")
    waiting.land(0, "again")
    assert not waiting.done.done()
    waiting.give_up(1)
    await asyncio.wait_for(waiting.done, 1)
    assert waiting.decisions == ["a", None, "c"]
    expired = Waiting(2)
    expired.land(1, "b")
    expired.expire()
    assert expired.done.done() and expired.decisions == [None, "b"]

