"""The implementations under test, and the fresh per-run settings (topics, app id, state dir)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from streams.settings import Settings

__all__ = ["Implementation", "implementations", "run_settings", "run_env", "KEYS", "NOT_LIMITERS"]

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
#: Every implementation, in the order the tables show them; ratewarden (the limiter role) comes first.
KEYS = ("ratewarden", "ratewarden-eos", "ratewarden-all", "quix", "quix-tumbling", "naive", "passthrough")
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
