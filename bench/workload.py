"""The benchmark workload: JSON request events over U users, keyed by user, event time increasing.

Event time advances 1 ms per event, so 1,000 users send 60 requests per 60 s window on average.
3% of the users ("heavy") send ten times as often as the others (about 470 vs 47 a minute for
1,000 users): with the default limit of 100 per 60 s, the heavy users are throttled and the light
ones are not; about 14% of the first 30,000 events and 19% of 200,000 are throttled. The trace is deterministic for a seed, so every
implementation decides the same events and their verdicts can be compared.
"""

from __future__ import annotations

import math
import random
import time
from typing import Callable

import msgspec
from kafka import KafkaProducer

from schemas.events import RequestEvent

__all__ = ["Workload", "make_producer", "publish_backlog", "base_timestamp", "event_bytes", "user_name"]

#: Event-time step between consecutive backlog events, seconds.
STEP = 0.001
HEAVY_SHARE = 0.03
HEAVY_WEIGHT = 10.0

_encode = msgspec.json.Encoder().encode


def user_name(index: int) -> str:
    return f"user-{index:05d}"


def _ip(index: int) -> str:
    return f"10.{(index >> 8) & 255}.{index & 255}.7"


def event_bytes(request_id: str, user: int, ts: float) -> tuple[bytes, bytes]:
    """(key, value) of one request event as services publish it."""
    name = user_name(user)
    event = RequestEvent(request_id=request_id, user_id=name, ip=_ip(user), request_type="read", ts=ts)
    return name.encode(), _encode(event)


class Workload:
    """Chooses users with the heavy/light skew; ``ids(prefix, n)`` names the requests."""

    def __init__(self, users: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.users = users
        self.seed = seed
        weights = [HEAVY_WEIGHT if rng.random() < HEAVY_SHARE else 1.0 for _ in range(users)]
        self._cumulative: list[float] = []
        total = 0.0
        for weight in weights:
            total += weight
            self._cumulative.append(total)

    def user_sequence(self, n: int, seed: int) -> list[int]:
        """``n`` user indexes drawn with the skew (deterministic for ``seed``)."""
        rng = random.Random(seed)
        return rng.choices(range(self.users), cum_weights=self._cumulative, k=n)

    @staticmethod
    def request_id(prefix: str, i: int) -> str:
        return f"{prefix}-{i:08d}"


def base_timestamp(max_events: int) -> float:
    """An event time, aligned to a minute, early enough that ``max_events`` backlog events end in the past."""
    return math.floor((time.time() - max_events * STEP - 120.0) / 60.0) * 60.0


def make_producer(bootstrap: str, linger_ms: int = 5, **options) -> KafkaProducer:
    """A kafka-python producer (it stamps each record's CreateTime when ``send`` is called)."""
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms,
                         batch_size=256 * 1024, max_request_size=4 * 1024 * 1024, **options)


def publish_backlog(
    bootstrap: str, topic: str, workload: Workload, n: int, base_ts: float, prefix: str = "b",
    progress: Callable[[int], None] | None = None,
) -> set[str]:
    """Publish ``n`` backlog events, event time ``base_ts + i * STEP``, and return their request ids.

    Pass the same ``base_ts`` to every run so that runs of different lengths share their prefix
    (same ids, users and event times) and their verdicts can be compared.
    """
    users = workload.user_sequence(n, workload.seed)
    producer = make_producer(bootstrap)
    ids: set[str] = set()
    try:
        for i, user in enumerate(users):
            request_id = workload.request_id(prefix, i)
            key, value = event_bytes(request_id, user, round(base_ts + i * STEP, 3))
            producer.send(topic, key=key, value=value)
            ids.add(request_id)
            if progress is not None and (i + 1) % 5_000 == 0:
                progress(i + 1)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=30)
    if progress is not None:
        progress(n)
    return ids
