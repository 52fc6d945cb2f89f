"""This process's own HTTP/1.1 load (raw asyncio sockets, uvloop): closed loop at C connections, or
open loop paced from due times (latency counted from the due time: no coordinated omission)."""

from __future__ import annotations

import asyncio
import random
import re
import time

from bench.gateway.target import Target

__all__ = ["Tally", "own_load"]


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 answer (Content-Length or chunked)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
        elif lower.startswith(b"transfer-encoding:") and b"chunked" in lower:
            chunked = True
    if not chunked:
        return int(status_line.split()[1]), await reader.readexactly(length)
    body = bytearray()
    while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
        body += await reader.readexactly(size)
        await reader.readline()
    await reader.readline()
    return int(status_line.split()[1]), bytes(body)


def _wire_requests(target: Target, users: int, batch: int, seed: int, pool: int = 256) -> list[bytes]:
    """Whole HTTP requests as sent: one per user, or (``batch``) a pool of batch calls of random users."""
    head = f"POST {target.path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in target.headers.items())
    bodies = target.bodies(users, batch, seed, pool)
    return [f"{head}Content-Length: {len(b.encode())}\r\n\r\n".encode() + b.encode() for b in bodies]


class Tally:
    """The answers of a run: latencies, decisions (2xx and 429), undecided ones among them, errors."""

    def __init__(self, not_decided: list[str]) -> None:
        self.latencies: list[float] = []
        self.decided_calls = self.undecided = self.errors = self.throttled = 0
        self.patterns = [re.compile(p.replace("%s", r"\s").encode()) for p in not_decided]

    def add(self, status: int, body: bytes, latency: float) -> None:
        self.latencies.append(latency)
        if 200 <= status < 300 or status == 429:
            self.decided_calls += 1
            self.throttled += status == 429
            if status != 429:
                self.undecided += sum(len(p.findall(body)) for p in self.patterns)
        else:
            self.errors += 1

    def figures(self, source: str, send_lags: list[float] | None) -> dict:
        """The run's figures (latencies in ms): count, p50/p90/p99/max, decisions, errors, and how late the pacer
        sent (p99 of ``send_lags``; None when not paced). Shared by the own client and vegeta."""
        lat = sorted(self.latencies)
        return {"requests": len(lat), "p50_ms": _ms_at(lat, 0.5), "p90_ms": _ms_at(lat, 0.9),
                "p99_ms": _ms_at(lat, 0.99), "max_ms": lat[-1] * 1000 if lat else None,
                "decided_calls": self.decided_calls, "undecided": self.undecided, "throttled_calls": self.throttled,
                "errors": self.errors, "source": source, "send_lag_p99_ms": _ms_at(sorted(send_lags or []), 0.99)}


def _ms_at(ordered: list[float], x: float) -> float | None:
    """The ``x`` quantile of ``ordered`` seconds, in ms; None for none."""
    return ordered[min(len(ordered) - 1, int(x * len(ordered)))] * 1000 if ordered else None


async def _connection(target: Target, wire: list[bytes], rng: random.Random, tally: Tally, turn) -> None:
    """One keep-alive connection, one call at a time: ``await turn()`` waits for the next call and gives
    (the time its latency counts from, whether it is counted), or None when the run is over."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        while (next_call := await turn()) is not None:
            start, counted = next_call
            writer.write(rng.choice(wire))
            status, body = await _read_answer(reader)
            if counted:
                tally.add(status, body, time.perf_counter() - start)
    except (ConnectionError, asyncio.IncompleteReadError):
        tally.errors += 1
    finally:
        writer.close()


def own_load(target: Target, users: int, batch: int, connections: int, seconds: float, warmup: float,
             rate: float | None = None, seed: int = 7) -> dict:
    """Closed loop at ``connections`` connections, or (``rate``) open loop paced from due times."""
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    wire = _wire_requests(target, users, batch, seed)
    tally = Tally(target.not_decided)
    schedule: dict = {}

    async def go() -> float:
        start = time.perf_counter() + 0.05
        count_from, stop_at = start + warmup, start + warmup + seconds
        if rate:
            schedule.update(next=0, total=int(rate * (warmup + seconds)), lags=[])

            async def turn():  # open loop: call i is due at start + i / rate, counted from then
                i = schedule["next"]
                if i >= schedule["total"]:
                    return None
                schedule["next"] = i + 1
                due = start + i / rate
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                schedule["lags"].append(time.perf_counter() - due)
                return due, due >= count_from
        else:
            async def turn():  # closed loop: the next call as soon as the answer is in
                now = time.perf_counter()
                return None if now >= stop_at else (now, now >= count_from)

        await asyncio.gather(*(_connection(target, wire, random.Random(seed + i), tally, turn)
                               for i in range(connections)))
        return time.perf_counter() - count_from

    elapsed = runner(go())
    return {**tally.figures("own", schedule.get("lags")), "seconds": min(elapsed, seconds) if not rate else seconds}
