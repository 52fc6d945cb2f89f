"""Live load for the latency run: publish request events at a fixed offered rate, then report.

Run as its own process (``python bench/pacer.py --bootstrap ... --topic ... --rate R --duration S``)
so that the benchmark process never competes with it. Pacing uses absolute deadlines: event ``i`` is
due at ``t0 + i / rate``; whatever is due is sent at once, so a late wake-up is caught up and the
rate does not drift. Each event carries ``ts`` = wall time at send, and kafka-python stamps the
record's CreateTime in ``send()``. Prints one JSON line: events sent, the achieved rate, and how far
behind its schedule the sender fell.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.workload import Workload, event_bytes, make_producer  # noqa: E402

__all__ = ["pace"]


def pace(bootstrap: str, topic: str, rate: float, duration: float, users: int, seed: int, prefix: str,
         linger_ms: int) -> dict:
    """Send ``rate * duration`` events on schedule; return what was achieved."""
    total = max(1, int(rate * duration))
    sequence = Workload(users, seed).user_sequence(total, seed + 1)
    producer = make_producer(bootstrap, linger_ms=linger_ms)
    send, now_wall, clock = producer.send, time.time, time.monotonic
    try:
        producer.partitions_for(topic)  # metadata first, so the first send does not block
        t0 = clock() + 0.1
        first = last = first_wall = last_wall = 0.0
        max_behind = 0.0
        i = 0
        while i < total:
            now = clock()
            due = min(total, int((now - t0) * rate) + 1)
            if due > i:
                max_behind = max(max_behind, now - (t0 + i / rate))
                if i == 0:
                    first, first_wall = now, now_wall()
                while i < due:
                    key, value = event_bytes(f"{prefix}-{i:08d}", sequence[i], round(now_wall(), 3))
                    send(topic, key=key, value=value)
                    i += 1
                last, last_wall = clock(), now_wall()
            else:
                time.sleep(max(0.0, t0 + i / rate - clock()))
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=30)
    span = last - first
    return {
        "sent": total,
        "offered_rate": rate,
        "achieved_rate": (total - 1) / span if span > 0 else float(total),
        "max_behind_ms": round(max_behind * 1000.0, 1),
        "seconds": round(span, 3),
        "first_wall": first_wall,
        "last_wall": last_wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prefix", default="live")
    parser.add_argument("--linger-ms", type=int, default=1)
    args = parser.parse_args(argv)
    result = pace(args.bootstrap, args.topic, args.rate, args.duration, args.users, args.seed, args.prefix,
                  args.linger_ms)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
