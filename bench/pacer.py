"""Live load for the latency run: publish request events at a fixed offered rate, then report.

Run as its own process (``python bench/pacer.py --bootstrap ... --topic ... --rate R --duration S``)
so that the benchmark process never competes with it. Pacing uses absolute deadlines: event ``i`` is
due at ``t0 + i / rate``; whatever is due is sent at once, so a late wake-up is caught up and the
rate does not drift. Prints one JSON line: events sent, the achieved rate, how far behind its
schedule the sender fell, and how long the broker took to acknowledge the batches (p50/p99): the
part of the measured latency spent before the request was even stored.

kafka-python's ``send()`` costs tens of microseconds per record, which capped a kafka-python pacer
near 20-27k events/s on a 2-core machine, below the rates the live run needs. So the pacer appends
records straight to aiokafka record batches (one per partition, partitioned by key with Kafka's
default murmur2 partitioner) and hands them to the producer every ``--linger-ms`` (default 5 ms,
the producer default of Kafka 4.x clients): the many services that publish requests batch too, and
a produce request per millisecond per partition would spend the 2-core machine's CPU in the broker.
It builds every batch before its clock starts (the schedule is fixed), so during the run it only
sends them: appending on the fly took 36-44% of a core at 64,700 events/s, from the two cores the
system under test runs on. Each record's CreateTime and ``ts`` are the wall time it is *due*, and a
batch is sent when its newest event is due, so the time an event waits for its batch counts in the
measured latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.workload import Workload, event_bytes, user_name  # noqa: E402

__all__ = ["pace"]


def _slots(total: int, rate: float, linger: float) -> list[int]:
    """Slot bounds: slot ``n`` holds events ``bounds[n]`` to ``bounds[n + 1] - 1`` (the last bound is
    ``total``). Event ``i`` is due at ``i / rate``; slot ``n`` holds the events due in
    ``(n * linger, (n + 1) * linger]`` (the first also event 0)."""
    bounds, i = [], 0
    while i < total:
        bounds.append(i)
        i = max(i + 1, min(total, int((len(bounds) * linger) * rate) + 1))
    return bounds + [total]


def _build(producer, bounds: list[int], sequence, partition_of, wall0: float, rate: float,
           prefix: str) -> list[list[tuple[int, object]]]:
    """Every slot's record batches, per partition, stamped with each event's due time (built before the run)."""
    slots = []
    for first, last in zip(bounds, bounds[1:]):
        batches: dict[int, list] = {}
        for j in range(first, last):
            user = sequence[j]
            partition = partition_of[user]
            open_ = batches.setdefault(partition, [producer.create_batch()])
            due_wall = wall0 + j / rate
            key, value = event_bytes(f"{prefix}-{j:08d}", user, round(due_wall, 3))
            stamp = int(due_wall * 1000.0)
            if open_[-1].append(key=key, value=value, timestamp=stamp) is None:
                open_.append(producer.create_batch())
                open_[-1].append(key=key, value=value, timestamp=stamp)
        slots.append([(partition, batch) for partition, built in batches.items() for batch in built])
    return slots


async def pace(bootstrap: str, topic: str, rate: float, duration: float, users: int, seed: int,
               prefix: str, linger_ms: float = 5.0) -> dict:
    """Send ``rate * duration`` events on schedule; return what was achieved.

    The record batches are built first, stamped with the times their events will be due, so that
    during the run the pacer only hands batches to the producer: building them on the fly cost it 36-44%
    of a core at 64,700 events/s on the 2-core machine, taken from the system under test.
    """
    total = max(1, int(rate * duration))
    sequence = Workload(users, seed).user_sequence(total, seed + 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        partition_of = [partitioner(user_name(u).encode(), partitions, partitions) for u in range(users)]
        clock, wall = time.monotonic, time.time
        linger = linger_ms / 1000.0
        bounds = _slots(total, rate, linger)
        probe = time.perf_counter()  # how long building takes here (two slots), to start the clock after it
        _build(producer, bounds[:3], sequence, partition_of, 0.0, rate, prefix)
        per_event = (time.perf_counter() - probe) / bounds[min(2, len(bounds) - 1)]
        t0 = clock() + 2.0 * per_event * total + 0.5
        wall0 = wall() + (t0 - clock())  # the wall time of t0
        slots = _build(producer, bounds, sequence, partition_of, wall0, rate, prefix)
        first = last = first_wall = last_wall = max_behind = 0.0
        futures = []
        ack_delays: list[float] = []  # per batch: due time of its oldest record -> acknowledged by the broker
        for n, batches in enumerate(slots):
            newest = bounds[n + 1] - 1
            due_at = t0 + newest / rate  # a slot goes when its newest event is due: none is sent early
            now = clock()
            if now < due_at:
                await asyncio.sleep(due_at - now)
                now = clock()
            max_behind = max(max_behind, now - due_at)
            if n == 0:  # the run starts when event 0 is due (shifted by any lateness)
                first, first_wall = now - newest / rate, wall() - newest / rate
            oldest = t0 + bounds[n] / rate
            for partition, batch in batches:
                future = await producer.send_batch(batch, topic, partition=partition)
                future.add_done_callback(lambda _, due=oldest: ack_delays.append(clock() - due))
                futures.append(future)
            last, last_wall = clock(), wall()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    span = last - first
    return {
        "sent": total,
        "offered_rate": rate,
        "achieved_rate": (total - 1) / span if span > 0 else float(total),
        "max_behind_ms": round(max_behind * 1000.0, 1),
        "seconds": round(span, 3),
        "ack_p50_ms": _quantile(ack_delays, 0.5),
        "ack_p99_ms": _quantile(ack_delays, 0.99),
        "first_wall": first_wall,
        "last_wall": last_wall,
    }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000.0 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prefix", default="live")
    parser.add_argument("--linger-ms", type=float, default=5.0, help="time between produced batches")
    args = parser.parse_args(argv)
    result = asyncio.run(pace(args.bootstrap, args.topic, args.rate, args.duration, args.users, args.seed,
                              args.prefix, args.linger_ms))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
