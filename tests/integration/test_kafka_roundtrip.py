"""The Kafka client benchmark's round trip (bench/peers/kafka_roundtrip.py via bench/kafka_client_bench.py) on the
real broker, with aiokafka (confluent-kafka runs in the quixstreams peer's venv, which only the benchmark builds):
every flight is answered, and the figures it reports come from that run."""

import argparse
import sys

from bench.kafka_client_bench import run_pair, summary


def test_an_aiokafka_pair_answers_every_flight_and_reports_its_cost(kafka_bootstrap):
    args = argparse.Namespace(partitions=4, records=8, flights=30, warmup=5)
    run = run_pair(sys.executable, "aiokafka", kafka_bootstrap, args)  # raises unless both sides finished
    assert run["requester"] > 0 and run["responder"] > 0
    assert 0 <= run["requester kernel"] <= run["requester"] and 0 <= run["responder kernel"] <= run["responder"]
    assert 0 < run["p50"] <= run["p99"] < 10_000  # ms: each of the 30 flights got its 8 replies
    (row,) = summary({"aiokafka": [run], "confluent-kafka": []})
    assert row[0] == "aiokafka" and row[-1] == "1"
    assert row[1] == f"{run['requester']:,.0f}" and row[3] == f"{run['responder']:,.0f}"  # one round: no range
