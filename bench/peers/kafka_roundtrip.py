"""One side of a Kafka request-reply round trip, with aiokafka or confluent-kafka, for bench/kafka_client_bench.py.

Runs in either environment and imports nothing from ratewarden: aiokafka in the project's venv,
confluent-kafka (librdkafka) in the quixstreams peer's venv, which has it (``bench/peers/quix_venv.sh``).

- ``responder``: reads every partition of ``--requests`` from offset 0 and writes each record back to
  partition 0 of ``--replies`` as soon as it is fetched (one batch per fetch), like the limiter's
  routed replies without the decision.
- ``requester``: ``--flights`` times, writes ``--records`` records spread over the request partitions
  (aiokafka: one batch per partition, as the gateway's outbox does) and waits for all their replies
  before the next flight, like one gateway with one flight in flight.

Each prints one JSON line: its CPU seconds (user + system, every thread of the process) and their
system part, from the first measured flight (after ``--warmup`` flights: connections, metadata, the
broker's JIT) to the last; the requester also its round trips in milliseconds. ``version`` prints the
confluent-kafka and librdkafka versions. Settings: no linger, the requester's reply fetch held up to
500 ms and the responder's up to 5 ms, as in ratewarden's hot path; acks=1 without idempotence,
where ratewarden's producers use acks=all with idempotence (one broker here, no replica to wait for).
"""

import argparse
import asyncio
import json
import resource
import time

__all__ = ["main"]

#: librdkafka leaves Nagle's algorithm on by default; asyncio's (and uvloop's) TCP transports set TCP_NODELAY.
NO_DELAY = {"socket.nagle.disable": True}
VALUE = b'{"request_id":"r-000000000000","user_id":"u1","ip":"192.0.2.10","request_type":"bench","ts":0.0}'


def cpu() -> tuple[float, float]:
    """This process's CPU seconds so far (every thread): all of it, and the kernel's part."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime


def spent(start: tuple[float, float]) -> dict:
    now = cpu()
    return {"cpu": now[0] - start[0], "kernel": now[1] - start[1]}


def records(args):
    return [(f"u{i}".encode(), i % args.partitions) for i in range(args.records)]


def confluent_requester(args) -> dict:
    from confluent_kafka import Consumer, Producer, TopicPartition
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 0, "acks": 1, **NO_DELAY})
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "roundtrip", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 500, **NO_DELAY})
    consumer.assign([TopicPartition(args.replies, 0, 0)])
    rtts, start = [], cpu()
    for flight in range(-args.warmup, args.flights):
        if flight == 0:
            rtts, start = [], cpu()
        began = time.perf_counter()
        for key, partition in records(args):
            producer.produce(args.requests, value=VALUE, key=key, partition=partition)
        producer.poll(0)
        got = 0
        while got < args.records:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                got += 1
        rtts.append(1000 * (time.perf_counter() - began))
    return {**spent(start), "rtt_ms": rtts}


def confluent_responder(args) -> dict:
    from confluent_kafka import Consumer, Producer, TopicPartition
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 0, "acks": 1, **NO_DELAY})
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "roundtrip", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 5, **NO_DELAY})
    consumer.assign([TopicPartition(args.requests, p, 0) for p in range(args.partitions)])
    served, start, warm, total = 0, None, args.warmup * args.records, (args.warmup + args.flights) * args.records
    while served < total:
        first = consumer.poll(1.0)
        if first is None:
            continue
        start = cpu() if start is None and served >= warm else start
        for message in [first, *consumer.consume(num_messages=1_000, timeout=0)]:
            if message.error() is None:
                producer.produce(args.replies, value=message.value(), key=message.key(), partition=0)
                served += 1
        producer.poll(0)
    producer.flush(10)
    return spent(start)


async def aiokafka_requester(args) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=0, acks=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=500)
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(args.replies, 0)])
    consumer.seek(TopicPartition(args.replies, 0), 0)
    per_partition: dict[int, list[bytes]] = {}
    for key, partition in records(args):
        per_partition.setdefault(partition, []).append(key)
    rtts, start = [], cpu()
    for flight in range(-args.warmup, args.flights):
        if flight == 0:
            rtts, start = [], cpu()
        began = time.perf_counter()
        for partition, keys in per_partition.items():
            batch = producer.create_batch()
            for key in keys:
                batch.append(key=key, value=VALUE, timestamp=None)
            await producer.send_batch(batch, args.requests, partition=partition)
        got = 0
        while got < args.records:
            got += sum(len(batch) for batch in (await consumer.getmany(timeout_ms=1_000)).values())
        rtts.append(1000 * (time.perf_counter() - began))
    result = {**spent(start), "rtt_ms": rtts}
    await consumer.stop()
    await producer.stop()
    return result


async def aiokafka_responder(args) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=0, acks=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    await producer.start()
    await consumer.start()
    partitions = [TopicPartition(args.requests, p) for p in range(args.partitions)]
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, 0)
    served, start, warm, total = 0, None, args.warmup * args.records, (args.warmup + args.flights) * args.records
    while served < total:
        fetched = await consumer.getmany(timeout_ms=1_000, max_records=1_000)
        if not fetched:
            continue
        start = cpu() if start is None and served >= warm else start
        batch = producer.create_batch()
        for batch_records in fetched.values():
            for record in batch_records:
                batch.append(key=record.key, value=record.value, timestamp=None)
                served += 1
        await producer.send_batch(batch, args.replies, partition=0)
    await producer.flush()
    result = spent(start)
    await consumer.stop()
    await producer.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("client", choices=["aiokafka", "confluent-kafka"])
    parser.add_argument("role", choices=["requester", "responder", "version"])
    parser.add_argument("--bootstrap")
    parser.add_argument("--requests")
    parser.add_argument("--replies")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--records", type=int, default=8)
    parser.add_argument("--flights", type=int, default=2_000)
    parser.add_argument("--warmup", type=int, default=100, help="flights before the measured ones")
    args = parser.parse_args()
    if args.client == "confluent-kafka" and args.role == "version":
        import confluent_kafka
        result = {"version": f"confluent-kafka {confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]})"}
    elif args.client == "confluent-kafka":
        result = (confluent_requester if args.role == "requester" else confluent_responder)(args)
    else:
        import uvloop  # as the gateway runs (uvicorn's loop); the worker runs Faust's asyncio loop
        side = aiokafka_requester if args.role == "requester" else aiokafka_responder
        result = (uvloop.run if args.role == "requester" else asyncio.run)(side(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
