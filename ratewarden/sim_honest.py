"""The simulator's honest traffic: addresses, users in sessions, retry bursts, and the outcomes.

Rows are ``(t, user, ip, request_type, outcome)`` with ``t`` in seconds from the trace's start and
``outcome`` either a fixed HTTP status or one of the codes ``HONEST`` / ``STUFFING``, drawn into a
status by :func:`draw_status` once the trace is in order (its own random stream, so a trace with and
without outcomes is the same trace).
"""

import ipaddress
import math
import random

__all__ = ["Addresses", "HONEST", "HONEST_TYPES", "MINUTE", "OK", "STUFFING", "draw_status", "honest_type",
           "honest_user", "retry_burst", "sessions"]

HONEST_TYPES = (("read", 0.52), ("search", 0.25), ("write", 0.18), ("login", 0.05))
MINUTE = 60.0
#: Outcome codes of a row: drawn later (honest: mostly 200; stuffing: logins mostly 401), or a fixed status.
HONEST, STUFFING, OK = 0, 1, 200


class Addresses:
    """Unique random addresses: IPv4 outside private, loopback and documentation ranges; global IPv6 /64s
    (first hextet 0x2a00-0x2a0f, so never 2001:db8::/32) and addresses inside them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used, self.networks = rng, set(), set()

    def new(self) -> str:
        while True:
            first = self.rng.randint(11, 223)
            if first in (100, 127, 169, 172, 192, 198, 203):
                continue
            ip = f"{first}.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randint(1, 254)}"
            if ip not in self.used:
                self.used.add(ip)
                return ip

    def new_network(self) -> int:
        """A fresh /64: its upper 64 bits."""
        while True:
            prefix = (self.rng.randint(0x2A00, 0x2A0F) << 48) | self.rng.getrandbits(48)
            if prefix not in self.networks:
                self.networks.add(prefix)
                return prefix

    def new_v6(self, prefix: int) -> str:
        """A fresh address in the /64 ``prefix`` (a random interface id)."""
        while True:
            ip = str(ipaddress.IPv6Address(prefix << 64 | self.rng.getrandbits(64)))
            if ip not in self.used:
                self.used.add(ip)
                return ip

    @staticmethod
    def cidr(prefix: int) -> str:
        return ipaddress.ip_network((prefix << 64, 64)).compressed


def honest_type(rng: random.Random, api_type: str | None) -> str:
    if api_type is not None and rng.random() < 0.9:
        return api_type
    x = rng.random()
    for kind, weight in HONEST_TYPES:
        x -= weight
        if x < 0:
            return kind
    return "read"


def sessions(rng: random.Random, span: float, wave: tuple[float, float] | None) -> list[tuple[float, float]]:
    """(start, end) of a user's sessions in [0, span); a wave forces the first one into it. Drawn again
    while all of them would be over before the trace starts: every user of the trace is in it."""
    out = []
    while not any(end > 0 for _, end in out):
        out = []
        for i in range(rng.choice((1, 1, 2, 3))):
            if i == 0 and wave is not None:
                start = rng.uniform(*wave)
            else:
                start = rng.uniform(-10 * MINUTE, span)
            length = min(max(rng.expovariate(1 / (10 * MINUTE)), MINUTE), span)
            out.append((start, start + length))
    merged: list[tuple[float, float]] = []  # one person, one session at a time
    for start, end in sorted(out):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _next(rng: random.Random, t: float, rate: float, flash: tuple[float, float, float] | None) -> float:
    """The next arrival of a Poisson process at ``rate`` a minute, ``factor`` times faster inside the flash
    crowd's (lo, hi, factor); at an edge the process restarts at the new rate (memoryless)."""
    if flash is None:
        return t + rng.expovariate(rate / MINUTE)
    lo, hi, factor = flash
    while True:
        edge = lo if t < lo else hi if t < hi else math.inf
        nxt = t + rng.expovariate(rate * (factor if lo <= t < hi else 1) / MINUTE)
        if nxt < edge:
            return nxt
        t = edge


def honest_user(rng, user, ips, span, wave, out, flash=None) -> None:
    """One person: a ``login`` opening each session, then Poisson requests (API clients: 20-60 a minute, 90%
    one type; others ~2.5 a minute, lognormal); each session on one of ``ips``."""
    api = rng.random() < 0.03
    rate = rng.uniform(20, 60) if api else min(max(rng.lognormvariate(math.log(2.5), 0.8), 0.2), 40.0)
    api_type = rng.choice(("read", "search")) if api else None
    for start, end in sessions(rng, span, wave):
        ip = rng.choice(ips)
        if start >= 0:
            out.append((start, user, ip, "login", HONEST))
        stop = min(end, span)
        t = _next(rng, start, rate, flash)
        while t < stop:
            if t >= 0:
                out.append((t, user, ip, honest_type(rng, api_type), HONEST))
            t = _next(rng, t, rate, flash)


def retry_burst(rng: random.Random, user: str, ip: str, at: float, out: list, n: int = 150, within: float = 30.0) -> None:
    """A client retrying after errors: ``n`` requests of one type in ``within`` seconds from ``at``, the first
    two thirds answered 503, the rest 200."""
    kind = rng.choice(("read", "search", "write"))
    times = [0.0] + sorted(rng.uniform(0, within - 0.5) for _ in range(n - 1))
    for i, dt in enumerate(times):
        out.append((at + dt, user, ip, kind, 503 if i < n * 2 // 3 else OK))


def draw_status(rng: random.Random, request_type: str, outcome: int) -> int:
    """Honest: a login 200 (95%) or 401, anything else 200 (99%), 404 or 500. Stuffing: a login 401 (97%) or
    200, anything else 200. A fixed status stays."""
    if outcome == HONEST:
        x = rng.random()
        if request_type == "login":
            return 200 if x < 0.95 else 401
        return 200 if x < 0.99 else 404 if x < 0.996 else 500
    if outcome == STUFFING:
        return (401 if rng.random() < 0.97 else 200) if request_type == "login" else OK
    return outcome
