"""Benchmark: CPU per request-reply flight with aiokafka against confluent-kafka (librdkafka), side by side.

    .venv/bin/python bench/kafka_client_bench.py [--rounds 3] [--flights 2000] [--warmup 200] [--records 8]
        [--partitions 4] [--markdown FILE [--section TITLE]]

Why: an inline decision crosses Kafka twice (the gateway's produce, the limiter's fetch and produce, the
gateway's reply fetch), and on this 2-core machine the Kafka client is about a quarter of the gateway's
and of the worker's CPU, Python rather than system calls (docs/benchmarks.md, "Gateway, late evening
2026-12-07"). This measures that cost alone, with no decision in between:
``bench/peers/kafka_roundtrip.py`` runs a responder (the limiter's place) and a requester (the
gateway's, one flight in flight) with each client. aiokafka runs in this venv; confluent-kafka in the
quixstreams peer's venv (built once by ``bench/peers/quix_venv.sh``; not a ratewarden dependency).

Each round runs both clients one after the other (the order alternates between rounds) on fresh
topics of one broker (``KAFKA_BOOTSTRAP_SERVERS``, else a local KRaft broker in a temporary directory,
stopped by PID at the end). Reported per client: CPU per flight of each side (user + system time of
the whole process, every thread, and its kernel part, over the flights after ``--warmup``) and the
round trip p50/p99, as medians (min–max) over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.commands import command_line, interrupt_on_signals  # noqa: E402
from bench.limiter_bench import quix_python  # noqa: E402
from bench.report import machine, markdown_table, spread  # noqa: E402

__all__ = ["main"]

SIDE = Path(__file__).resolve().parent / "peers" / "kafka_roundtrip.py"
CLIENTS = ("aiokafka", "confluent-kafka")
HEADERS = ["client", "requester CPU µs/flight", "of it kernel", "responder CPU µs/flight", "of it kernel",
           "round trip p50 ms", "p99 ms", "rounds"]
SIDES = ("requester", "requester kernel", "responder", "responder kernel")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flights", type=int, default=2_000, help="flights per run (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured flights first (default 200)")
    parser.add_argument("--records", type=int, default=8, help="requests per flight (default 8)")
    parser.add_argument("--partitions", type=int, default=4, help="request partitions (default 4)")
    parser.add_argument("--markdown", type=Path, help="append the results as a Markdown section to this file")
    parser.add_argument("--section", default="Kafka client: CPU per request-reply flight")
    return parser


def run_pair(python: str, client: str, bootstrap: str, args) -> dict:
    """One responder and one requester of ``client`` on fresh topics; their JSON results, merged."""
    from streams.settings import Settings
    from streams.topics import ensure_topics

    settings = Settings(kafka_bootstrap_servers=bootstrap, partitions=args.partitions,
                        replies_partitions=1).scoped(f"roundtrip-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings)  # the project's topics under a fresh prefix; the run uses two of them
    topics = {"--requests": settings.requests_topic, "--replies": settings.replies_topic}
    common = ["--bootstrap", bootstrap, "--partitions", str(args.partitions), "--records", str(args.records),
              "--flights", str(args.flights), "--warmup", str(args.warmup)] + [x for pair in topics.items() for x in pair]
    responder = subprocess.Popen([python, str(SIDE), client, "responder", *common], stdout=subprocess.PIPE,
                                 text=True, start_new_session=True)
    try:
        requester = subprocess.run([python, str(SIDE), client, "requester", *common], capture_output=True,
                                   text=True, timeout=600, check=True)
        answered, _ = responder.communicate(timeout=120)
    finally:
        if responder.poll() is None:
            responder.kill()
            responder.wait()
    if responder.returncode != 0 or not answered.strip():
        raise RuntimeError(f"{client} responder exited with status {responder.returncode} and no result")
    asked, served = json.loads(requester.stdout.splitlines()[-1]), json.loads(answered.splitlines()[-1])
    rtts = sorted(asked["rtt_ms"])
    per_flight = {f"{side}{part}": 1e6 * result[key] / args.flights for side, result in (("requester", asked),
                  ("responder", served)) for part, key in (("", "cpu"), (" kernel", "kernel"))}
    return {**per_flight, "p50": rtts[len(rtts) // 2], "p99": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]}


def summary(results: dict[str, list[dict]]) -> list[list[str]]:
    return [[client, *(spread([r[side] for r in runs], ",.0f") for side in SIDES),
             spread([r["p50"] for r in runs], ".2f"), spread([r["p99"] for r in runs], ".2f"), str(len(runs))]
            for client, runs in results.items() if runs]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    interrupt_on_signals()
    pythons = {"aiokafka": sys.executable, "confluent-kafka": quix_python(console)}
    if pythons["confluent-kafka"] is None:
        return 1
    from streams.devkafka.broker import KAFKA_VERSION, LocalKafka

    broker, bootstrap = None, os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka = f"external broker at {bootstrap}"
    results: dict[str, list[dict]] = {client: [] for client in CLIENTS}
    try:
        if not bootstrap:
            broker = LocalKafka(Path(tempfile.mkdtemp(prefix="roundtrip-bench-")) / "kafka")
            with console.status("starting a local Kafka broker"):
                bootstrap = broker.start()
            kafka = f"Apache Kafka {KAFKA_VERSION}, single-node KRaft JVM started by the benchmark, loopback"
        for round_no in range(1, args.rounds + 1):
            for client in (CLIENTS if round_no % 2 else CLIENTS[::-1]):
                with console.status(f"round {round_no}: {client}, {args.flights} flights of {args.records}"):
                    run = run_pair(pythons[client], client, bootstrap, args)
                results[client].append(run)
                console.print(f"round {round_no} {client}: requester {run['requester']:,.0f} µs/flight "
                              f"({run['requester kernel']:,.0f} kernel), responder {run['responder']:,.0f} µs/flight "
                              f"({run['responder kernel']:,.0f} kernel), round trip p50 {run['p50']:.2f} ms, "
                              f"p99 {run['p99']:.2f} ms")
    finally:
        if broker is not None:
            broker.stop()
    table = Table(*HEADERS, title="CPU per flight: medians (min–max) over rounds")
    for row in summary(results):
        table.add_row(*row)
    console.print(table)
    if args.markdown:
        librdkafka = subprocess.run([pythons["confluent-kafka"], str(SIDE), "confluent-kafka", "version"],
                                    capture_output=True, text=True, check=True).stdout
        facts = "\n".join(f"- {name}: {value}" for name, value in
                          [*machine(kafka), ("peer client", json.loads(librdkafka)["version"])])
        command = command_line("bench/kafka_client_bench.py", sys.argv[1:] if argv is None else argv)
        text = (f"\n## {args.section}\n\n`{command}`\n\n"
                f"{facts}\n\n{markdown_table(HEADERS, summary(results))}\n")
        with open(args.markdown, "a") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
