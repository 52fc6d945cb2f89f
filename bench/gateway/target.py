"""A system under test as the load generators see it: its address, endpoint, headers and bodies."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

__all__ = ["OURS_NOT_DECIDED", "IP", "DOMAIN", "Target"]

#: Answers that are not decisions although their status is 2xx (Lua patterns, counted per occurrence).
OURS_NOT_DECIDED = ['"fail_open":%s*true', '"status":%s*"unavailable"']
IP = "192.0.2.10"
DOMAIN = "rw"


@dataclass
class Target:
    """One system under test as the load generators see it."""

    name: str  # "ours" | "peer"
    port: int
    path: str
    headers: dict[str, str]
    not_decided: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # whose CPU is charged to it
    host: str = "127.0.0.1"
    batch: int = 0  # decisions per call (0: the single call)
    lag_url: str | None = None  # ours: the worker's metrics page (its event-loop stalls: bench.gateway.loop_stalls)

    def item(self, user: str) -> str:
        if self.name == "ours":
            return json.dumps({"request_type": "bench", "user_id": user, "ip": IP}, separators=(",", ":"))
        return json.dumps({"entries": [{"key": "user", "value": user}]}, separators=(",", ":"))

    def body(self, users: list[str]) -> str:
        """One call's body for ``users`` (one user: the single call; several: the batch call)."""
        if len(users) == 1 and not self.batch:
            if self.name == "ours":
                return self.item(users[0])
            return '{"domain":"%s","descriptors":[%s]}' % (DOMAIN, self.item(users[0]))
        items = ",".join(self.item(u) for u in users)
        return '{"requests":[%s]}' % items if self.name == "ours" else '{"domain":"%s","descriptors":[%s]}' % (
            DOMAIN, items)

    def bodies(self, users: int, batch: int, seed: int, pool: int = 256) -> list[str]:
        """The bodies a load generator sends: one per user (``u1`` ..), or (``batch``) a pool of batch bodies
        of random users."""
        rng = random.Random(seed)
        if batch:
            return [self.body([f"u{rng.randint(1, users)}" for _ in range(batch)]) for _ in range(pool)]
        return [self.body([f"u{n}"]) for n in range(1, users + 1)]
