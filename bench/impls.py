"""The implementations under test, and the fresh per-run settings (topics, app id, state dir)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from streams.settings import Settings

__all__ = ["Implementation", "implementations", "run_settings", "run_env"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Implementation:
    """How to start one worker process, and what to say about its configuration."""

    key: str
    label: str
    command: tuple[str, ...]
    events: int
    env: dict[str, str] = field(default_factory=dict)
    notes: str = ""


def implementations(events: int, baseline_events: int, naive_store: str) -> list[Implementation]:
    defaults = Settings()
    ratewarden = Implementation(
        key="ratewarden",
        label="ratewarden",
        command=(sys.executable, "-m", "ratewarden.cli", "worker", "--loglevel", "warning"),
        events=events,
        notes=(
            "`ratewarden worker` (Faust app; batch limiter task with its own aiokafka consumer/producer); "
            f"flush_interval={defaults.flush_interval:g} s, flush_events={defaults.flush_events:,}, "
            f"fetch_max_records={defaults.fetch_max_records:,}, fetch_max_wait_ms={defaults.fetch_max_wait_ms}; "
            "state: dict + rocksdict, changelog once per touched key per flush; producer acks=all, "
            "idempotent, linger 2 ms; at-least-once (offsets committed after each flush)"
        ),
    )
    naive = Implementation(
        key="naive",
        label="naive Faust",
        command=(sys.executable, str(ROOT / "bench" / "peers" / "naive_faust.py"), "worker", "-l", "warn"),
        events=baseline_events,
        env={"NAIVE_FAUST_STORE": naive_store},
        notes=(
            "`bench/peers/naive_faust.py`: `@app.agent` over `faust.Record` values, "
            "`app.Table(...).tumbling(60, expires=180 s).relative_to_field(Request.ts)` read with `.value()`, "
            f"store `{naive_store}` (faust-streaming 0.15.3 backs `rocksdb://` with rocksdict), "
            "one `await decisions.send(...)` per event; Faust defaults otherwise "
            "(at_least_once, commit every 2.8 s), broker_session_timeout=10 s"
        ),
    )
    return [ratewarden, naive]


def run_settings(bootstrap: str, tag: str, var_dir: Path, partitions: int) -> Settings:
    """Settings with uniquely named topics and app id, and a fresh state directory."""
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        app_id=tag,
        requests_topic=f"{tag}-requests",
        decisions_topic=f"{tag}-decisions",
        dead_letter_topic=f"{tag}-dead-letters",
        limits_topic=f"{tag}-limits",
        blocklist_topic=f"{tag}-blocklist",
        var_dir=var_dir,
        partitions=partitions,
    )


def run_env(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    """The worker's environment: ours, plus the settings as KAFKA_BOOTSTRAP_SERVERS / RATEWARDEN_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATEWARDEN_")}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "RATEWARDEN_APP_ID": settings.app_id,
        "RATEWARDEN_REQUESTS_TOPIC": settings.requests_topic,
        "RATEWARDEN_DECISIONS_TOPIC": settings.decisions_topic,
        "RATEWARDEN_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "RATEWARDEN_LIMITS_TOPIC": settings.limits_topic,
        "RATEWARDEN_BLOCKLIST_TOPIC": settings.blocklist_topic,
        "RATEWARDEN_VAR_DIR": str(settings.var_dir),
        "RATEWARDEN_PARTITIONS": str(settings.partitions),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    })
    env.update(extra)
    return env

