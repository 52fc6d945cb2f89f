"""The quixstreams peer: a per-user fixed-window rate limiter written with quixstreams.

Run it with the quix venv's python (``bench/peers/quix_venv.sh`` prints its path); quixstreams is not
a ratewarden dependency and this file imports nothing from the project::

    PY=$(bench/peers/quix_venv.sh | tail -n1)
    $PY bench/peers/quix_count.py --bootstrap 127.0.0.1:9092 --input requests --output decisions \\
        --group quix-peer --state-dir /tmp/quix-state --variant stateful

It consumes JSON request events ``{"request_id","user_id","ip","request_type","ts"}`` keyed by
user_id (``ts`` in seconds is the event time, read by the topic's timestamp extractor) and publishes
one JSON decision per event, keyed by user_id, with the fields of ratewarden's decisions. Verdict:
"allow" while the user's count in the fixed window ``[floor(ts / W) * W, +W)`` is <= limit, else
"throttle"; ``count`` is the number of allowed requests in the window (as in ratewarden).

Variants:

``tumbling``
    ``tumbling_window(W).count().current()`` as the quixstreams docs show. ``current()`` emits one
    ``{"start","end","value"}`` result per processed message (none for a late one), but the result
    carries only the aggregate. quixstreams has no operator that joins a window result back to the
    message that produced it (its joins are between topics), so an ``update`` step before the window
    remembers the event and the step after it pairs the two. That is sound because quixstreams runs
    the whole pipeline for one message before it takes the next. ``Count`` counts every event,
    throttled ones too; the verdicts are the same as counting only the allowed ones.
``stateful``
    ``apply(stateful=True)`` keeping ``[window_start_ms, allowed]`` per user in the RocksDB state
    store; throttled requests are not counted.

State is quixstreams' default RocksDB store with changelog topics, flushed and committed every
``--commit-interval`` seconds (checkpoints). Output records carry the wall-clock time they were
produced, not the event time, so the decision topic's timestamps measure throughput. SIGTERM (or
SIGINT) stops the application after a final checkpoint; the exit status is then 0. Arguments left
out are read from the ratewarden environment (``KAFKA_BOOTSTRAP_SERVERS``, ``RATEWARDEN_*``), as
the benchmark sets it for every implementation.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import Any

# quixstreams imports authlib's httpx client, which warns on import (and forces its own warnings filter
# to "always"); recording the import's warnings keeps them off stderr.
with warnings.catch_warnings(record=True):
    from quixstreams import Application

_VARIANTS = ("tumbling", "stateful")


def event_time_ms(value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
    """Timestamp extractor: the event's ``ts`` (seconds) in milliseconds."""
    return int(round(value["ts"] * 1000.0))


def wall_clock_ms(value: Any, key: Any, timestamp: int, headers: Any) -> int:
    """The timestamp given to an output record: now, in milliseconds."""
    return int(time.time() * 1000.0)


def decision(event: dict, allowed: int, seen: int, limit: int, window_start_ms: int,
             window_ms: int) -> dict:
    """The decision record for ``event``: ``seen`` requests so far in its window, ``allowed`` allowed."""
    allow = seen <= limit
    window_start = window_start_ms / 1000.0
    return {
        "request_id": event["request_id"], "user_id": event["user_id"], "ip": event.get("ip"),
        "request_type": event.get("request_type"),
        "verdict": "allow" if allow else "throttle",
        "reason": "within_limit" if allow else "rate_limited",
        "limit": limit, "count": allowed, "remaining": max(0, limit - allowed),
        "window_start": window_start, "reset_at": window_start + window_ms / 1000.0,
        "ts_event": event["ts"], "ts_decided": time.time(),
    }


def build_stateful(sdf, limit: int, window_ms: int):
    """Variant ``stateful``: one ``[window_start_ms, allowed]`` state entry per user."""

    def decide(event: dict, state) -> dict:
        ts_ms = int(round(event["ts"] * 1000.0))
        start = ts_ms - ts_ms % window_ms
        current = state.get("w")
        allowed = current[1] if current is not None and current[0] == start else 0
        seen = allowed + 1  # the count this request would make
        if seen <= limit:
            allowed = seen
            state.set("w", [start, allowed])
        elif current is None or current[0] != start:
            state.set("w", [start, allowed])
        return decision(event, allowed, seen, limit, start, window_ms)

    return sdf.apply(decide, stateful=True)


def build_tumbling(sdf, limit: int, window_ms: int):
    """Variant ``tumbling``: quixstreams' tumbling-window count, paired back with its event."""
    pending: list[dict] = [{}]

    def remember(event: dict) -> None:
        pending[0] = event

    def decide(window: dict) -> dict:
        seen = window["value"]
        return decision(pending[0], min(seen, limit), seen, limit, window["start"], window_ms)

    sdf = sdf.update(remember)
    sdf = sdf.tumbling_window(duration_ms=window_ms).count().current()
    return sdf.apply(decide)


def make_app(args: argparse.Namespace) -> Application:
    """The Application and its pipeline for ``args``."""
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        loglevel=args.loglevel,
    )
    requests = app.topic(args.input, key_deserializer="bytes", value_deserializer="json",
                         timestamp_extractor=event_time_ms)
    decisions = app.topic(args.output, key_serializer="bytes", value_serializer="json")
    sdf = app.dataframe(requests)
    build = build_tumbling if args.variant == "tumbling" else build_stateful
    sdf = build(sdf, args.limit, int(round(args.window * 1000.0)))
    sdf = sdf.set_timestamp(wall_clock_ms)
    sdf.to_topic(decisions)
    return app


def _env(name: str, default: str | None = None) -> dict:
    """An argument's default from the ratewarden environment, if set there; else it is required."""
    value = os.environ.get(name, default)
    return {"default": value} if value is not None else {"required": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Arguments; each defaults to the ratewarden environment variable named in its help."""
    var_dir = os.environ.get("RATEWARDEN_VAR_DIR")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", **_env("KAFKA_BOOTSTRAP_SERVERS"), help="HOST:PORT (KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--input", **_env("RATEWARDEN_REQUESTS_TOPIC"), help="requests topic (RATEWARDEN_REQUESTS_TOPIC)")
    parser.add_argument("--output", **_env("RATEWARDEN_DECISIONS_TOPIC"),
                        help="decisions topic (RATEWARDEN_DECISIONS_TOPIC)")
    parser.add_argument("--group", **_env("RATEWARDEN_APP_ID"), help="consumer group, also names the state "
                                                                    "(RATEWARDEN_APP_ID)")
    parser.add_argument("--state-dir", **({"default": os.path.join(var_dir, "quix-state")} if var_dir else
                                          {"required": True}),
                        help="quixstreams state directory (RocksDB; RATEWARDEN_VAR_DIR/quix-state)")
    parser.add_argument("--variant", required=True, choices=_VARIANTS)
    parser.add_argument("--limit", type=int, default=int(os.environ.get("RATEWARDEN_DEFAULT_LIMIT", 100)),
                        help="allowed requests per window (RATEWARDEN_DEFAULT_LIMIT)")
    parser.add_argument("--window", type=float, default=float(os.environ.get("RATEWARDEN_DEFAULT_WINDOW", 60.0)),
                        help="window length, seconds (RATEWARDEN_DEFAULT_WINDOW)")
    parser.add_argument("--commit-interval", type=float, default=1.0,
                        help="checkpoint (state flush + offset commit) interval, seconds")
    parser.add_argument("--loglevel", default="WARNING", help="quixstreams log level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app = make_app(args)
    app.run()  # returns after SIGTERM/SIGINT, once the last checkpoint is committed
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
