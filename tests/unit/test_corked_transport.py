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


def with_corked(body) -> FakeTransport:
    """Run ``body(corked)`` in an event loop over a fake socket transport; that transport afterwards."""
    async def run() -> FakeTransport:
        fake = FakeTransport()
        await body(CorkedTransport(fake, asyncio.get_running_loop()))
        await asyncio.sleep(0)  # the turn ends
        return fake

    return asyncio.run(run())


def test_writes_of_one_turn_leave_as_one() -> None:
    async def body(corked: CorkedTransport) -> None:
        corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        corked.write(b"{}")
        assert corked._transport.writes == []  # nothing until the turn ends
        await asyncio.sleep(0)
        corked.write(b"next")

    assert with_corked(body).writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"next"]


def test_close_sends_what_is_pending_first_and_nothing_after() -> None:
    async def body(corked: CorkedTransport) -> None:
        corked.write(b"a")
        corked.write(b"b")
        corked.close()
        corked.write(b"late")  # a write after close is dropped, as the socket's would be

    fake = with_corked(body)
    assert fake.writes == [b"ab"] and fake.closed


def test_everything_else_is_the_wrapped_transport() -> None:
    async def body(corked: CorkedTransport) -> None:
        assert corked.get_extra_info("peername") == ("127.0.0.1", 1234) and not corked.is_closing()

    with_corked(body)
