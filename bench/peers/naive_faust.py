"""The baseline: a rate limiter written as a plain per-event Faust agent, the way Faust's docs show it.

One ``@app.agent`` iterates the requests topic as ``faust.Record`` values; a tumbling 60 s windowed
table, relative to the event's ``ts`` field, counts each user's allowed requests; every event gets
one ``await decisions.send(...)`` with the same decision JSON as ratewarden's (request_id, user_id,
verdict, limit, count, ...). Fixed-window semantics match ratewarden's default: allow while
``count + 1 <= limit``; throttled requests are not counted.

Run: ``python bench/peers/naive_faust.py worker -l warn`` with the ratewarden environment
(``KAFKA_BOOTSTRAP_SERVERS``, ``RATEWARDEN_APP_ID``, ``RATEWARDEN_REQUESTS_TOPIC``,
``RATEWARDEN_DECISIONS_TOPIC``, ``RATEWARDEN_VAR_DIR``, ``RATEWARDEN_PARTITIONS``,
``RATEWARDEN_DEFAULT_LIMIT``, ``RATEWARDEN_DEFAULT_WINDOW``). ``NAIVE_FAUST_STORE`` picks the table
store (default ``rocksdb://``, which faust-streaming 0.15.3 backs with rocksdict).
"""

import math
import os
import time
from datetime import timedelta

import faust

from streams.settings import get_settings

settings = get_settings()
WINDOW = settings.default_window
LIMIT = settings.default_limit
STORE = os.environ.get("NAIVE_FAUST_STORE", "rocksdb://")
settings.var_dir.mkdir(parents=True, exist_ok=True)

app = faust.App(
    settings.app_id,
    broker=f"kafka://{settings.kafka_bootstrap_servers}",
    store=STORE,
    datadir=str(settings.var_dir / "faust"),
    topic_partitions=settings.partitions,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    # A fresh group joins much faster with short timeouts (see the Faust notes).
    broker_session_timeout=10.0,
    broker_heartbeat_interval=1.0,
    broker_rebalance_timeout=10.0,
)


class Request(faust.Record, serializer="json"):
    request_id: str
    user_id: str
    ip: str
    request_type: str
    ts: float


class Decision(faust.Record, serializer="json", include_metadata=False):
    request_id: str
    user_id: str
    ip: str
    request_type: str
    verdict: str
    reason: str
    limit: int
    count: int
    remaining: int
    window_start: float
    reset_at: float
    retry_after: float
    shadow: bool
    ts_event: float
    ts_decided: float


requests = app.topic(settings.requests_topic, key_type=bytes, value_type=Request)
decisions = app.topic(settings.decisions_topic, key_type=bytes, value_type=Decision)

allowed = (
    app.Table("allowed", default=int, partitions=settings.partitions)
    .tumbling(timedelta(seconds=WINDOW), expires=timedelta(seconds=3 * WINDOW))
    .relative_to_field(Request.ts)
)


@app.agent(requests)
async def decide(stream):
    """One decision per request: read the user's window, count if allowed, send the decision."""
    async for request in stream:
        used = allowed[request.user_id].value()
        window_start = math.floor(request.ts / WINDOW) * WINDOW
        reset_at = window_start + WINDOW
        if used + 1 <= LIMIT:
            allowed[request.user_id] += 1
            verdict, reason, count, retry_after = "allow", "within_limit", used + 1, 0.0
        else:
            verdict, reason, count = "throttle", "rate_limited", used
            retry_after = math.ceil((reset_at - request.ts) * 1000.0 - 1e-6) / 1000.0
        await decisions.send(
            key=request.user_id.encode(),
            value=Decision(
                request_id=request.request_id, user_id=request.user_id, ip=request.ip,
                request_type=request.request_type, verdict=verdict, reason=reason, limit=LIMIT, count=count,
                remaining=max(0, LIMIT - count), window_start=window_start, reset_at=reset_at,
                retry_after=retry_after, shadow=False, ts_event=request.ts, ts_decided=time.time(),
            ),
        )


if __name__ == "__main__":
    app.main()
