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
Each record's CreateTime and ``ts`` are the wall time it was *due*, not the time it was appended,
so the time an event waits for its batch counts in the measured latency.
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


async def pace(bootstrap: str, topic: str, rate: float, duration: float, users: int, seed: int,
               prefix: str, linger_ms: float = 5.0) -> dict:
    """Send ``rate * duration`` events on schedule; return what was achieved."""
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
        t0 = clock() + 0.1
        wall0 = wall() + (t0 - clock())  # the wall time of t0
        linger = linger_ms / 1000.0
        first = last = first_wall = last_wall = max_behind = 0.0
        futures = []
        ack_delays: list[float] = []  # per batch: due time of its oldest record -> acknowledged by the broker
        i = 0
        while i < total:
            now = clock()
            due = min(total, int((now - t0) * rate) + 1)
            if due <= i or (due < total and now - last < linger):
                await asyncio.sleep(max(0.0, t0 + i / rate - now, last + linger - now))
                continue
            max_behind = max(max_behind, now - (t0 + i / rate))
            if i == 0:
                first, first_wall = now, wall()
            batches: dict[int, object] = {}
            for j in range(i, due):
                user = sequence[j]
                partition = partition_of[user]
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                due_wall = wall0 + j / rate
                key, value = event_bytes(f"{prefix}-{j:08d}", user, round(due_wall, 3))
                stamp = int(due_wall * 1000.0)
                if batch.append(key=key, value=value, timestamp=stamp) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=stamp)
            for partition, batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            for future in futures[len(futures) - len(batches):]:
                future.add_done_callback(lambda _, due_at=t0 + i / rate: ack_delays.append(clock() - due_at))
            i = due
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
