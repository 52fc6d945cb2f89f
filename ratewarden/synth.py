"""A synthetic request trace: users at varied rates, some of them over their limits.

Deterministic for a seed; events come out in ts order, in the replay format.
"""

import random

from schemas.events import RequestEvent

__all__ = ["synthetic_trace"]

REQUEST_TYPES = ("read", "read", "read", "search", "write", "login")


def synthetic_trace(
    users: int = 300,
    minutes: float = 3.0,
    seed: int = 7,
    start_ts: float = 1_732_900_000.0,
    heavy_share: float = 0.1,
    heavy_rate: float = 180.0,
) -> list[RequestEvent]:
    """Most users send 2-60 requests a minute; ``heavy_share`` of them send ``heavy_rate`` or more."""
    rng = random.Random(seed)
    span = minutes * 60.0
    events: list[tuple[float, str, str, str]] = []
    for u in range(users):
        user = f"user-{u:05d}"
        heavy = rng.random() < heavy_share
        per_minute = heavy_rate * rng.uniform(1.0, 2.0) if heavy else rng.uniform(2.0, 60.0)
        ips = [f"198.51.{rng.randrange(100, 102)}.{rng.randrange(1, 255)}" for _ in range(rng.randint(1, 2))]
        t = start_ts + rng.uniform(0, 60.0 / per_minute)
        while t < start_ts + span:
            events.append((round(t, 3), user, rng.choice(ips), rng.choice(REQUEST_TYPES)))
            t += rng.expovariate(per_minute / 60.0)
    events.sort()
    return [
        RequestEvent(request_id=f"req-{i:08d}", user_id=user, ip=ip, request_type=kind, ts=ts)
        for i, (ts, user, ip, kind) in enumerate(events)
    ]
