"""The implementations under test, and the fresh per-run settings (topics, app id, state dir)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from streams.settings import Settings

__all__ = ["Implementation", "implementations", "run_settings", "run_env", "KEYS"]

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("ratewarden", "ratewarden-limiter", "naive")


@dataclass(frozen=True)
class Implementation:
    """How to start one worker process, and what to say about its configuration."""

    key: str
    label: str
    command: tuple[str, ...]
    events: int
    env: dict[str, str] = field(default_factory=dict)
    notes: str = ""


def _ratewarden_notes(s: Settings, analytics: bool) -> str:
    return (
        "`ratewarden worker` (the Faust app: batch limiter task with its own aiokafka consumer and producer, "
        "history service" + (", abuse analytics on the decisions topic and the blocklist agent" if analytics else
                             "; analytics off: `RATEWARDEN_ANALYTICS_ENABLED=false`") + "); "
        f"flush_interval={s.flush_interval:g} s, flush_events={s.flush_events:,}, "
        f"fetch_max_records={s.fetch_max_records:,}, fetch_max_wait_ms={s.fetch_max_wait_ms}, "
        f"processing_guarantee={getattr(s, 'processing_guarantee', 'at_least_once')}; "
        "window state in a dict + rocksdict, each touched counter written once per flush to the changelog"
    )


def implementations(events: int, baseline_events: int, naive_store: str) -> list[Implementation]:
    """ratewarden as configured (defaults), ratewarden with analytics off, and the naive Faust agent."""
    s = Settings()
    worker = (sys.executable, "-m", "ratewarden.cli", "worker", "--loglevel", "warning")
    analytics = getattr(s, "analytics_enabled", False)
    out = [Implementation("ratewarden", "ratewarden", worker, events, notes=_ratewarden_notes(s, analytics))]
    if analytics:
        out.append(Implementation("ratewarden-limiter", "ratewarden, analytics off", worker, events,
                                  env={"RATEWARDEN_ANALYTICS_ENABLED": "false"}, notes=_ratewarden_notes(s, False)))
    out.append(Implementation(
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
    ))
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
