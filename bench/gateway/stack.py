"""What the gateway benchmark starts and stops: ours (a Kafka broker, a worker and a gateway, or a
gateway already running), the peer (envoyproxy/ratelimit + Redis) and the background event pacer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from rich.console import Console

from bench.gateway.target import DOMAIN, IP, OURS_NOT_DECIDED, Target
from bench.peers.envoy_ratelimit import free_port

__all__ = ["Stack", "wait_ready", "start_ours", "start_peer", "start_background"]

#: ``bench/pacer.py``: request events of other users at a fixed rate.
PACER = Path(__file__).resolve().parent.parent / "pacer.py"


def wait_ready(url: str, key: str, timeout: float = 120.0) -> None:
    import httpx

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


class Stack:
    """What the benchmark starts, stopped by PID in reverse order."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.broker = None
        self.peer = None
        self.settings = None
        self.bootstrap: str | None = None

    def stop(self) -> None:
        from ratewarden.processes import stop_process

        if self.peer is not None:
            self.peer.stop()
        for process in reversed(self.processes):
            try:
                stop_process(process, timeout=30)
            except TimeoutError:
                pass
        if self.broker is not None:
            self.broker.stop()


def start_ours(args, tmp: Path, stack: Stack, console: Console) -> tuple[Target, str]:
    if args.gateway_url:
        from urllib.parse import urlsplit

        parts = urlsplit(args.gateway_url)
        target = Target("ours", parts.port or 80, "/requests/batch" if args.batch else "/requests",
                        {"Authorization": f"Bearer {args.key}"}, OURS_NOT_DECIDED, [], parts.hostname or "127.0.0.1",
                        batch=args.batch or 0)
        return target, f"external gateway at {args.gateway_url}"
    from ratewarden.gateway.server import start_gateway_process
    from ratewarden.gateway.users import create_user
    from ratewarden.processes import start_worker
    from streams.devkafka.broker import KAFKA_VERSION, LocalKafka
    from streams.settings import Settings
    from streams.topics import ensure_topics

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka = f"external broker at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)"
    if not bootstrap:
        stack.broker = LocalKafka(tmp / "kafka")
        with console.status(f"starting Kafka {KAFKA_VERSION} (local KRaft JVM)"):
            bootstrap = stack.broker.start()
        kafka = f"Apache Kafka {KAFKA_VERSION}, single-node KRaft JVM started by the benchmark, loopback"
    stack.bootstrap = bootstrap
    # The load's one address sends thousands of requests/s for 1,000 users: a flood by the detectors'
    # rules, banned after the first analytics window (every answer a 403). Allow-listed, like a trusted
    # edge, it is still analysed and reported (the same worker CPU), never banned.
    settings = Settings(kafka_bootstrap_servers=bootstrap, var_dir=tmp, partitions=args.partitions,
                        default_limit=args.limit, allowlist_cidrs=f"{IP}/32").scoped(uuid.uuid4().hex[:8])
    stack.settings = settings
    with console.status("starting a ratewarden worker and gateway on fresh topics"):
        ensure_topics(settings)
        _, key = create_user("bench-service", "service", settings)
        port = metrics_port = free_port()
        while metrics_port == port:
            metrics_port = free_port()
        stack.processes.append(start_worker(settings, tmp / "worker.log", "warning", metrics_port=metrics_port))
        gateway = start_gateway_process(settings, tmp / "gateway.log", "127.0.0.1", port, "--loglevel", "warning",
                                        *args.gateway_arg)
        stack.processes.append(gateway)
        wait_ready(f"http://127.0.0.1:{port}", key)
    target = Target("ours", port, "/requests/batch" if args.batch else "/requests",
                    {"Authorization": f"Bearer {key}"}, OURS_NOT_DECIDED, [gateway.pid], batch=args.batch or 0,
                    lag_url=f"http://127.0.0.1:{metrics_port}/metrics")
    return target, kafka


def start_peer(args, tmp: Path, stack: Stack, console: Console) -> tuple[Target, str]:
    from bench.peers.envoy_ratelimit import VERSION, EnvoyRateLimit, build

    with console.status("envoyproxy/ratelimit: go install (first time: several minutes)"):
        binary = build(console.print)
    stack.peer = EnvoyRateLimit(binary, tmp / "peer", args.limit, DOMAIN)
    with console.status("starting Redis and envoyproxy/ratelimit on loopback"):
        stack.peer.start()
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    version = next((w.split("=")[1] for w in redis if w.startswith("v=")), "?")
    target = Target("peer", stack.peer.port, "/json", {}, [], stack.peer.pids, batch=args.batch or 0)
    return target, f"envoyproxy/ratelimit {VERSION} (go install, HTTP /json), Redis {version} (no persistence)"


def start_background(args, stack: Stack, tmp: Path, seconds: float, round_no: int) -> subprocess.Popen:
    """``bench/pacer.py`` producing ``--background-rate`` events/s of 1,000 other users for ``seconds``."""
    log = open(tmp / f"pacer-{round_no}.json", "w")
    process = subprocess.Popen([sys.executable, str(PACER), "--bootstrap", stack.bootstrap, "--topic",
                                stack.settings.requests_topic, "--rate", str(args.background_rate), "--duration",
                                str(seconds), "--users", "1000", "--prefix", f"bg{round_no}"],
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    stack.processes.append(process)
    return process
