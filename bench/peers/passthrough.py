"""The ceiling: consume request events and produce one record per event, with no state and no rule.

What any limiter on this machine, this broker and these Python Kafka clients cannot beat: per
fetched batch (aiokafka ``getmany``, the same fetch settings as ratewarden), each raw event is
decoded (msgspec JSON), a decision-shaped record is encoded (``verdict`` is always ``"allow"``) and
appended to one record batch per partition; offsets are committed every ``--commit-interval``
seconds after the records are delivered (at least once). Run with the ratewarden environment::

    python bench/peers/passthrough.py   # KAFKA_BOOTSTRAP_SERVERS, RATEWARDEN_REQUESTS_TOPIC,
                                        # RATEWARDEN_DECISIONS_TOPIC, RATEWARDEN_APP_ID

SIGTERM or SIGINT stops it after a final commit.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

import msgspec

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from streams.kafka_io import BatchSender, make_consumer, make_producer  # noqa: E402
from streams.settings import get_settings  # noqa: E402


class _Event(msgspec.Struct):
    request_id: str
    user_id: str
    ts: float


class _Decision(msgspec.Struct):
    request_id: str
    user_id: str
    verdict: str
    ts_event: float
    ts_decided: float


async def run(commit_interval: float) -> None:
    settings = get_settings()
    consumer = make_consumer(settings, settings.requests_topic, group_id=f"{settings.app_id}-passthrough")
    producer = make_producer(settings)
    await producer.start()
    await consumer.start()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    decode, encode = msgspec.json.Decoder(_Event).decode, msgspec.json.Encoder().encode
    sender, topic = BatchSender(producer), settings.decisions_topic
    offsets, last_commit = {}, time.monotonic()
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=settings.fetch_max_records)
            now = time.time()
            for tp, records in batches.items():
                batch = sender.batch(topic, tp.partition)
                for record in records:
                    event = decode(record.value)
                    value = encode(_Decision(event.request_id, event.user_id, "allow", event.ts, now))
                    if batch.append(key=record.key, value=value, timestamp=None) is None:
                        await sender.add(topic, tp.partition, record.key, value)
                        batch = sender.batch(topic, tp.partition)
                offsets[tp] = records[-1].offset + 1
            await sender.send_all()
            if offsets and time.monotonic() - last_commit >= commit_interval:
                await sender.wait()
                await consumer.commit(offsets)
                offsets, last_commit = {}, time.monotonic()
    finally:
        await sender.wait()
        if offsets:
            await consumer.commit(offsets)
        await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit-interval", type=float, default=1.0, help="seconds between offset commits")
    args = parser.parse_args(argv)
    asyncio.run(run(args.commit_interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
