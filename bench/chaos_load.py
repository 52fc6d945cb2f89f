"""Steady offered load for the chaos soak: request events at a fixed rate until told to stop.

Run as its own process (``python bench/chaos_load.py --bootstrap ... --topic ... --rate R``) by
``bench/chaos.py``; it stops on SIGTERM (or after ``--duration``). Every second it prints one JSON
line ``{"sent", "acked", "failed", "wall"}``, and a last one with ``"done": true``.

Why not ``bench/pacer.py``: the pacer measures latency, so it sends one short run and gives up on a
failed batch; its producer is not idempotent either, so a retry across a broker restart can store
a request twice. Here the producer is idempotent (a retried batch is written once) and waits out a
broker restart (``request_timeout_ms`` far above the restart time), so every event handed to it is
stored exactly once or reported failed. The users, their skew and the event encoding are
``bench.workload``'s; as in the pacer, event ``i`` is due at ``t0 + i / rate`` and carries that due
wall time as its ``ts`` and CreateTime, so event time advances with wall time and windows roll over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.workload import Workload, event_bytes  # noqa: E402

__all__ = ["offer"]

_CHUNK = 10_000  # users are drawn from the workload's skew this many at a time


async def offer(bootstrap: str, topic: str, rate: float, duration: float, users: int, seed: int, prefix: str,
                stop: asyncio.Event, tick: float = 0.005) -> dict:
    """Send events on schedule until ``stop`` is set or ``duration`` s have passed; print progress."""
    workload = Workload(users, seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                request_timeout_ms=180_000, retry_backoff_ms=200)
    await producer.start()
    counts = {"sent": 0, "acked": 0, "failed": 0}
    errors: dict[str, int] = {}

    def settled(future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            counts["failed"] += 1
            name = "cancelled" if future.cancelled() else type(future.exception()).__name__
            errors[name] = errors.get(name, 0) + 1
        else:
            counts["acked"] += 1

    def report(**extra) -> None:
        print(json.dumps({**counts, "wall": time.time(), **extra}), flush=True)

    clock = time.monotonic
    t0 = clock() + 0.1
    wall0 = time.time() + (t0 - clock())
    total = int(rate * duration)
    sequence: list[int] = []
    pending: set[asyncio.Future] = set()
    last_report = clock()
    i = 0
    try:
        while i < total and not stop.is_set():
            now = clock()
            due = min(total, int((now - t0) * rate) + 1)
            for j in range(i, due):
                if j % _CHUNK == 0:
                    sequence = workload.user_sequence(_CHUNK, seed + 1 + j // _CHUNK)
                due_wall = wall0 + j / rate
                key, value = event_bytes(f"{prefix}-{j:09d}", sequence[j % _CHUNK], round(due_wall, 3))
                # Waits while the partition's batch is full and undelivered (a broker restart): the
                # schedule is caught up afterwards, each event still stamped with its due time.
                future = await producer.send(topic, value=value, key=key, timestamp_ms=int(due_wall * 1000.0))
                pending.add(future)
                future.add_done_callback(pending.discard)
                future.add_done_callback(settled)
                counts["sent"] += 1
            i = max(i, due)
            if now - last_report >= 1.0:
                report()
                last_report = now
            await asyncio.sleep(max(0.0, min(tick, t0 + i / rate - clock())))
        await producer.flush()
        if pending:
            await asyncio.wait(list(pending), timeout=200.0)
    finally:
        await producer.stop()
    span = clock() - t0
    result = {"done": True, "offered_rate": rate, "achieved_rate": counts["sent"] / span if span > 0 else 0.0,
              "seconds": round(span, 3), "errors": errors, "first_ts": round(wall0, 3),
              "last_ts": round(wall0 + (counts["sent"] - 1) / rate, 3)}
    report(**result)
    return {**counts, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--duration", type=float, default=86_400.0, help="seconds at most (SIGTERM stops it sooner)")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prefix", default="c")
    args = parser.parse_args(argv)

    async def run() -> dict:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        return await offer(args.bootstrap, args.topic, args.rate, args.duration, args.users, args.seed,
                           args.prefix, stop)

    result = asyncio.run(run())
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
