"""The gateway's corked transport: what one event-loop turn writes reaches the socket as one write."""

import asyncio

from ratewarden.gateway.server import CorkedTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str):
        return ("127.0.0.1", 1234) if name == "peername" else None


async def _turn() -> None:
    await asyncio.sleep(0)


def test_writes_of_one_turn_leave_as_one() -> None:
    async def run() -> FakeTransport:
        fake = FakeTransport()
        corked = CorkedTransport(fake, asyncio.get_running_loop())
        corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        corked.write(b"{}")
        assert fake.writes == []  # nothing until the turn ends
        await _turn()
        corked.write(b"next")
        await _turn()
        return fake

    fake = asyncio.run(run())
    assert fake.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"next"]


def test_close_sends_what_is_pending_first_and_nothing_after() -> None:
    async def run() -> FakeTransport:
        fake = FakeTransport()
        corked = CorkedTransport(fake, asyncio.get_running_loop())
        corked.write(b"a")
        corked.write(b"b")
        corked.close()
        corked.write(b"late")  # a write after close is dropped, as the socket's would be
        await _turn()
        return fake

    fake = asyncio.run(run())
    assert fake.writes == [b"ab"] and fake.closed


def test_everything_else_is_the_wrapped_transport() -> None:
    async def run() -> CorkedTransport:
        return CorkedTransport(FakeTransport(), asyncio.get_running_loop())

    corked = asyncio.run(run())
    assert corked.get_extra_info("peername") == ("127.0.0.1", 1234) and not corked.is_closing()
