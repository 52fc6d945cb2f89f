"""The implementations under test, and the fresh per-run settings (topics, app id, state dir)."""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import msgspec

from bench.workload import _ip as user_ip, make_producer
from schemas.limits import BlocklistEntry
from streams.settings import Settings
from streams.tables import blocklist_key

__all__ = ["Implementation", "implementations", "run_settings", "run_env", "KEYS", "NOT_LIMITERS",
           "cidr_bans", "banned_users", "CIDR_BANS", "CIDR_HIT_USERS"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
#: Every implementation, in the order the tables show them; ratewarden (the limiter role) comes first.
KEYS = ("ratewarden", "ratewarden-cidr", "ratewarden-eos", "ratewarden-all", "quix", "quix-tumbling", "naive", "passthrough")
#: Implementations whose verdicts are not a rate limiter's (left out of the verdict agreement).
NOT_LIMITERS = ("passthrough",)
_LIMITER_ONLY = {"RATEWARDEN_LIMITER_ENABLED": "true", "RATEWARDEN_HISTORY_ENABLED": "false",
                 "RATEWARDEN_ANALYTICS_ENABLED": "false"}


@dataclass(frozen=True)
class Implementation:
    """How to start one worker process, and what to say about its configuration."""

    key: str
    label: str
    command: tuple[str, ...]
    events: int
    env: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    #: Called with the run's settings once its topics exist, before the backlog and the worker (e.g. to load bans).
    setup: Callable[[Settings], None] | None = None



def _ratewarden_notes(s: Settings, roles: str, guarantee: str) -> str:
    return (
        f"`ratewarden worker --roles {roles}` (the Faust app; the limiter is a batch task with its own aiokafka "
        "consumer and producer); "
        f"processing_guarantee={guarantee}, flush_interval={s.flush_interval:g} s, flush_events={s.flush_events:,}, "
        f"fetch_max_records={s.fetch_max_records:,}, fetch_max_wait_ms={s.fetch_max_wait_ms}; "
        "window state in a dict + rocksdict, each touched counter written once per flush to the changelog"
    )


def implementations(events: int, baseline_events: int, naive_store: str, quix_python: str | None) -> list[Implementation]:
    """Every implementation the benchmark knows (the quixstreams ones only with ``quix_python``)."""
    s = Settings()
    worker = (sys.executable, "-m", "ratewarden.cli", "worker", "--loglevel", "warning")
    out = [
        Implementation("ratewarden", "ratewarden", worker, events, env=_LIMITER_ONLY,
                       notes=_ratewarden_notes(s, "limiter", "at_least_once")),
        Implementation("ratewarden-cidr", f"ratewarden, {CIDR_BANS:,} CIDR bans", worker, events, env=_LIMITER_ONLY,
                       notes=_ratewarden_notes(s, "limiter", "at_least_once") + f"; {CIDR_BANS:,} network bans on the "
                       "blocklist topic before the worker starts (half IPv4 /8-/32 outside 10/8, half IPv6 /16-/128, "
                       f"seed {CIDR_SEED}), {CIDR_HIT_USERS} of them each containing the address of one of "
                       f"{CIDR_HIT_USERS} users (1% of 1,000): those users' requests are blocked (`network_blocked`)",
                       setup=publish_cidr_bans),
        Implementation("ratewarden-eos", "ratewarden exactly-once", worker, events,
                       env={**_LIMITER_ONLY, "RATEWARDEN_PROCESSING_GUARANTEE": "exactly_once"},
                       notes=_ratewarden_notes(s, "limiter", "exactly_once") + "; a transactional producer per "
                       "input partition, one transaction per flush"),
        Implementation("ratewarden-all", "ratewarden, all roles", worker, events,
                       env={name: "true" for name in _LIMITER_ONLY},
                       notes=_ratewarden_notes(s, "limiter,history,analytics", "at_least_once")
                       + "; request history and abuse analytics in the same process, the history and the first "
                       "analytics stage fed the limiter's decisions in process at each completed flush (no re-read "
                       "of the decisions topic)"),
    ]
    if quix_python:
        quix = (quix_python, str(PEERS / "quix_count.py"), "--commit-interval", f"{s.flush_interval:g}")
        settings = ("quixstreams 3.28.1 in its own venv (`bench/peers/quix_venv.sh`); "
                    f"at-least-once, commit_interval={s.flush_interval:g} s (checkpoint: RocksDB flush, "
                    "changelog, offsets), state in its default RocksDB store with changelog topics, "
                    "auto_offset_reset=earliest")
        out += [
            Implementation("quix", "quixstreams stateful", (*quix, "--variant", "stateful"), events,
                           env={"PYTHONPATH": ""},
                           notes="`bench/peers/quix_count.py --variant stateful`: `apply(stateful=True)` holding "
                                 f"`[window_start, allowed]` per user; {settings}"),
            Implementation("quix-tumbling", "quixstreams tumbling", (*quix, "--variant", "tumbling"), events,
                           env={"PYTHONPATH": ""},
                           notes="`bench/peers/quix_count.py --variant tumbling`: "
                                 f"`tumbling_window(60 s).count().current()`; {settings}"),
        ]
    out += [
        Implementation(
            key="naive",
            label="naive Faust",
            command=(sys.executable, str(PEERS / "naive_faust.py"), "worker", "-l", "warn"),
            events=baseline_events,
            env={"NAIVE_FAUST_STORE": naive_store},
            notes=(
                "`bench/peers/naive_faust.py`: `@app.agent` over `faust.Record` values, "
                "`app.Table(...).tumbling(60, expires=180 s).relative_to_field(Request.ts)` read with `.value()`, "
                f"store `{naive_store}` (faust-streaming 0.15.3 backs `rocksdb://` with rocksdict), "
                "one `await decisions.send(...)` per event; Faust defaults otherwise "
                "(at_least_once, commit every 2.8 s), broker_session_timeout=10 s"
            ),
        ),
        Implementation(
            "passthrough", "passthrough ceiling",
            (sys.executable, str(PEERS / "passthrough.py"), "--commit-interval", f"{s.flush_interval:g}"), events,
            notes="`bench/peers/passthrough.py`: aiokafka batch consume -> msgspec decode -> encode -> one record "
                  "batch per partition, no state, no rule; the same fetch and producer settings as ratewarden; "
                  f"offsets committed every {s.flush_interval:g} s after delivery",
        ),
    ]
    return out


#: Network bans loaded for ``ratewarden-cidr``; this many of them contain one bench user's address each.
CIDR_BANS = 10_000
CIDR_HIT_USERS = 10
CIDR_SEED = 29
_TRAFFIC = ipaddress.ip_network("10.0.0.0/8")  # every bench address is 10.x.y.7 (bench.workload)


def banned_users() -> list[int]:
    """The users whose address one of :func:`cidr_bans` contains: 10 spread over the default 1,000 (1%)."""
    return list(range(50, 1000, 100))[:CIDR_HIT_USERS]


def cidr_bans() -> list[str]:
    """``CIDR_BANS`` distinct networks, deterministic: varied prefix lengths, IPv4 and IPv6, none containing
    a bench address except one per :func:`banned_users` user (a /24../32 around its 10.x.y.7)."""
    rng = random.Random(CIDR_SEED)
    hits = [f"{user_ip(u)}/{rng.choice((24, 26, 28, 30, 32))}" for u in banned_users()]
    networks = {str(ipaddress.ip_network(h, strict=False)) for h in hits}
    while len(networks) < CIDR_BANS:
        if len(networks) % 2:
            network = ipaddress.ip_network((rng.getrandbits(32), rng.randrange(8, 33)), strict=False)
            if network.overlaps(_TRAFFIC):
                continue
        else:
            network = ipaddress.ip_network((rng.getrandbits(128), rng.randrange(16, 129)), strict=False)
        networks.add(str(network))
    return sorted(networks)


def publish_cidr_bans(settings: Settings) -> None:
    """Write :func:`cidr_bans` to the run's blocklist topic (as ``ratewarden blocklist add CIDR`` would)."""
    producer = make_producer(settings.kafka_bootstrap_servers)
    try:
        for cidr in cidr_bans():
            entry = BlocklistEntry(subject=cidr, kind="network", reason="bench")
            producer.send(settings.blocklist_topic, key=blocklist_key("network", cidr).encode(),
                          value=msgspec.json.encode(entry))
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=30)
    logger.info("published %d network bans to %s", CIDR_BANS, settings.blocklist_topic)


def run_settings(bootstrap: str, tag: str, run_dir: Path, partitions: int) -> Settings:
    """Settings whose topics, groups and state directory are this run's own (``Settings.scoped``)."""
    base = Settings(kafka_bootstrap_servers=bootstrap, var_dir=run_dir, partitions=partitions)
    return base.scoped(tag)


def run_env(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    """The worker's environment: ours (so RATEWARDEN_* tuning applies) with every topic name, the app id,
    state directory, partitions and broker of ``settings``."""
    env = dict(os.environ)
    names = [name for name in type(settings).model_fields if name.endswith("_topic")]
    for name in [*names, "app_id", "var_dir", "partitions"]:
        env[f"RATEWARDEN_{name.upper()}"] = str(getattr(settings, name))
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers or ""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env
