"""Benchmark: POST /requests through ``ratewarden gateway``, load from this (separate) process on loopback.

    .venv/bin/python bench/gateway_bench.py [--seconds 20] [--concurrency 32] [--users 1000] [--limit 1000000000]

Starts (and stops) on fresh topics: a ``ratewarden worker`` process and a ``ratewarden gateway``
process on a free loopback port. Uses ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local Kafka in a
temporary directory. The load generator is this process: ``--concurrency`` keep-alive HTTP/1.1
connections (a minimal asyncio client, so the generator is not the bottleneck), each sending
``POST /requests`` with a service key on behalf of one of ``--users`` users, one request at a time.
Latency is measured per request at the client (send to last body byte); the first ``--warmup``
seconds are not counted. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from ratewarden.gateway.server import start_gateway_process  # noqa: E402
from ratewarden.gateway.users import create_user  # noqa: E402
from ratewarden.processes import start_worker, stop_process  # noqa: E402
from streams.devkafka.broker import LocalKafka  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def connection(port: int, key: str, users: list[str], stop_at: float, count_from: float,
                     latencies: list[float], statuses: Counter, seed: int) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /requests HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    try:
        while (now := time.perf_counter()) < stop_at:
            body = json.dumps({"request_type": "bench", "user_id": rng.choice(users), "ip": "192.0.2.10"}).encode()
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if now >= count_from:
                latencies.append(time.perf_counter() - now)
                statuses[int(status_line.split()[1])] += 1
    finally:
        writer.close()


async def load(port: int, key: str, users: list[str], seconds: float, warmup: float, concurrency: int):
    latencies: list[float] = []
    statuses: Counter = Counter()
    start = time.perf_counter()
    await asyncio.gather(*(
        connection(port, key, users, start + warmup + seconds, start + warmup, latencies, statuses, i)
        for i in range(concurrency)
    ))
    return latencies, statuses


def wait_ready(url: str, key: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                answer = client.post("/requests", json={"request_type": "warm-up"})
                if answer.status_code == 200 and not answer.json()["fail_open"]:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise RuntimeError("the gateway never answered with a real decision")


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=1_000_000_000, help="per-user limit (default: all allowed)")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = LocalKafka(tmp / "kafka")
        bootstrap = broker.start()
    settings = Settings(kafka_bootstrap_servers=bootstrap, var_dir=tmp, partitions=args.partitions,
                        default_limit=args.limit).scoped(uuid.uuid4().hex[:8])
    processes = []
    try:
        ensure_topics(settings)
        _, key = create_user("bench-service", "service", settings)
        port = free_port()
        processes.append(start_worker(settings, tmp / "worker.log"))
        processes.append(start_gateway_process(settings, tmp / "gateway.log", "127.0.0.1", port, "--loglevel", "warning"))
        wait_ready(f"http://127.0.0.1:{port}", key)
        users = [f"user-{i:05d}" for i in range(args.users)]
        latencies, statuses = asyncio.run(load(port, key, users, args.seconds, args.warmup, args.concurrency))
        wait = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        for process in processes:
            stop_process(process)
        if broker is not None:
            broker.stop()
    latencies.sort()
    result = {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / args.seconds),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "statuses": dict(statuses),
        "concurrency": args.concurrency,
        "seconds": args.seconds,
    }
    timeouts = [line for line in wait.splitlines() if line.startswith("ratewarden_gateway_decision_timeouts_total ")]
    result["decision_timeouts"] = float(timeouts[0].split()[1]) if timeouts else None
    print(json.dumps(result))
    print(f"{result['requests_per_s']} requests/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms "
          f"({args.concurrency} connections, {args.seconds:g} s; logs in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
