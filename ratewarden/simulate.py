"""A labelled traffic simulator: honest users, offices behind NAT, and known attacks.

``ratewarden simulate --minutes M --users N --seed S --out TRACE.jsonl --labels LABELS.json``
writes a trace in the replay format (lines in ts order) and the labels: which IPs attack, how and
from when, which IPs are offices, and the allow-list of known offices. Deterministic for a seed.

Honest traffic: users in sessions (a ``login``, then reads, searches and writes at a per-user rate
of a few requests a minute; a few API clients at up to 60 a minute, mostly one type); most users on
their own address, some households of 2-4 users, and offices where 15-80 users share one NAT address
(half of them on the allow-list, some opening with a wave of logins). Attacks, at fixed shares of
the trace so any length works (each lasts at least three windows):

* ``flood``: one IP, one account, 700 or 1,200 requests a minute; the first floods twice (a repeat
  offender);
* ``credential_stuffing``: a pool of three IPs, 120 requests a minute each, mostly ``login``, a
  different user name each time;
* ``scraper``: one IP, one account, 180-240 requests a minute of one request type;
* ``hammering``: one IP, one account at 240 a minute against a limit of 100: mostly throttled;
* ``low_and_slow``: 24 IPs, 6 logins a minute each, a different user name each time.

Attackers send at a steady pace with jitter (bots), honest users as Poisson processes.
"""

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from schemas.events import RequestEvent

__all__ = ["Simulation", "simulate", "write_labels", "ALLOWLIST"]

#: Known offices live in TEST-NET-1; everything else gets addresses drawn at random.
ALLOWLIST = ["192.0.2.0/24"]
HONEST_TYPES = (("read", 0.52), ("search", 0.25), ("write", 0.18), ("login", 0.05))
MINUTE = 60.0


@dataclass
class Simulation:
    events: list[RequestEvent]
    labels: dict = field(default_factory=dict)


class _Addresses:
    """Unique random IPv4 addresses outside private, loopback and documentation ranges."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def new(self) -> str:
        while True:
            first = self.rng.randint(11, 223)
            if first in (100, 127, 169, 172, 192, 198, 203):
                continue
            ip = f"{first}.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randint(1, 254)}"
            if ip not in self.used:
                self.used.add(ip)
                return ip


def _honest_type(rng: random.Random, api_type: str | None) -> str:
    if api_type is not None and rng.random() < 0.9:
        return api_type
    x = rng.random()
    for kind, weight in HONEST_TYPES:
        x -= weight
        if x < 0:
            return kind
    return "read"


def _sessions(rng: random.Random, span: float, wave: tuple[float, float] | None) -> list[tuple[float, float]]:
    """(start, end) of a user's sessions in [0, span); a wave forces the first one into it."""
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


def _honest_user(rng, user, ips, span, wave, out) -> None:
    api = rng.random() < 0.03
    rate = rng.uniform(20, 60) if api else min(max(rng.lognormvariate(math.log(2.5), 0.8), 0.2), 40.0)
    api_type = rng.choice(("read", "search")) if api else None
    for start, end in _sessions(rng, span, wave):
        ip = rng.choice(ips)
        if start >= 0:
            out.append((start, user, ip, "login"))
        t = start + rng.expovariate(rate / MINUTE)
        while t < min(end, span):
            if t >= 0:
                out.append((t, user, ip, _honest_type(rng, api_type)))
            t += rng.expovariate(rate / MINUTE)


def _steady(rng, start, end, per_minute, emit) -> None:
    """A bot's pace: one request every 60/per_minute seconds, +-30% jitter."""
    step = MINUTE / per_minute
    t = start + rng.uniform(0, step)
    while t < end:
        emit(t)
        t += step * rng.uniform(0.7, 1.3)


def simulate(
    minutes: float = 30.0, users: int = 2000, seed: int = 7, start_ts: float = 1_732_900_000.0
) -> Simulation:
    """The trace (ts order, replay format) and its labels."""
    rng = random.Random(seed)
    span = minutes * MINUTE
    addresses = _Addresses(rng)
    out: list[tuple[float, str, str, str]] = []
    labels: dict = {"seed": seed, "minutes": minutes, "users": users, "start_ts": start_ts,
                    "end_ts": start_ts + span, "allowlist": ALLOWLIST, "attackers": {}, "offices": {}}

    # Offices: up to ~30% of the users, 15-80 each behind one address; every other one is allow-listed.
    u = 0
    for k in range(max(2, users // 250)):
        size = rng.randint(15, 80)
        if u + size > users * 0.3:
            break
        allowlisted = k % 2 == 0
        ip = f"192.0.2.{10 + k}" if allowlisted else addresses.new()
        wave_start = rng.uniform(0.05, 0.3) * span
        wave = (wave_start, wave_start + 3 * MINUTE) if k % 3 != 2 else None
        for _ in range(size):
            _honest_user(rng, f"user-{u:05d}", [ip], span, wave, out)
            u += 1
        labels["offices"][ip] = {"users": size, "allowlisted": allowlisted, "login_wave": wave is not None}
    # Everyone else: own address (some with a second one), some households of 2-4 users.
    while u < users:
        household = rng.randint(2, 4) if rng.random() < 0.05 else 1
        ips = [addresses.new()]
        for _ in range(min(household, users - u)):
            own = ips + ([addresses.new()] if rng.random() < 0.1 else [])
            _honest_user(rng, f"user-{u:05d}", own, span, None, out)
            u += 1

    def attack(kind: str, intervals: list[tuple[float, float]], per_minute: float, user, request_type) -> None:
        """One attacking IP; ``user()`` and ``request_type()`` give each request's account and type."""
        ip = addresses.new()
        shown = [[round(start_ts + a, 3), round(start_ts + b, 3)] for a, b in intervals]
        labels["attackers"][ip] = {"kind": kind, "start": shown[0][0], "intervals": shown, "per_minute": per_minute}
        for a, b in intervals:
            _steady(rng, a, b, per_minute, lambda t: out.append((t, user(), ip, request_type())))

    def during(a: float, b: float) -> tuple[float, float]:
        """From share ``a`` of the trace (plus up to 50 s, off the window grid) to share ``b``, 3 min at least."""
        start = a * span + rng.uniform(0, 50)
        return start, max(b * span, start + 3 * MINUTE)

    def fixed(value: str):
        return lambda: value

    victims = iter(rng.sample(range(1_000_000, 10_000_000), 200_000))

    def victim() -> str:
        return f"user-{next(victims)}"

    attack("flood", [during(0.15, 0.32), during(0.55, 0.68)], 700, fixed("acct-flood-1"),  # comes back
           lambda: _honest_type(rng, None))
    attack("flood", [during(0.75, 0.85)], 1200, fixed("acct-flood-2"), fixed("read"))
    pool = during(0.3, 0.62)
    for _ in range(3):
        attack("credential_stuffing", [pool], 120, victim, lambda: "login" if rng.random() < 0.95 else "read")
    attack("scraper", [during(0.2, 0.5)], 180, fixed("acct-crawler-0"), fixed("search"))
    attack("scraper", [during(0.45, 0.8)], 240, fixed("acct-crawler-1"), fixed("read"))
    attack("hammering", [during(0.4, 0.6)], 240, fixed("acct-hammer"), lambda: rng.choice(("read", "search", "write")))
    campaign = during(0.5, 0.9)
    for _ in range(24):
        attack("low_and_slow", [campaign], 6, victim, fixed("login"))

    out = sorted((round(start_ts + t, 3), user, ip, kind) for t, user, ip, kind in out if 0 <= t < span)
    events = [
        RequestEvent(request_id=f"sim-{seed}-{i:08d}", user_id=user, ip=ip, request_type=kind, ts=ts)
        for i, (ts, user, ip, kind) in enumerate(out)
    ]
    labels["events"] = len(events)
    return Simulation(events, labels)


def write_labels(path: Path, labels: dict) -> None:
    Path(path).write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n")
