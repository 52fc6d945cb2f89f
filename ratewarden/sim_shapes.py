"""The simulator's attacks: the labelled sources (one IP, or an IPv6 network) and the evasion shapes.

Every attack source is labelled in ``labels["attackers"][source]`` with its kind, start, intervals (epoch
seconds) and rate; an IPv6 network also with ``"network": True``. Bots send at a steady pace with jitter.
"""

import random

from ratewarden.sim_honest import HONEST, MINUTE, OK, STUFFING, Addresses, draw_status, honest_type
from schemas.events import RequestEvent

__all__ = ["Trace", "account_rotation", "distributed_stuffing", "ipv6_rotation", "steady"]


def steady(rng: random.Random, start: float, end: float, per_minute: float, emit) -> None:
    """A bot's pace: one request every 60/per_minute seconds, +-30% jitter."""
    step = MINUTE / per_minute
    t = start + rng.uniform(0, step)
    while t < end:
        emit(t)
        t += step * rng.uniform(0.7, 1.3)


class Trace:
    """What the shapes add to: the random stream, the span, the addresses in use, the rows and the labels."""

    def __init__(self, rng: random.Random, span: float, start_ts: float, addresses: Addresses, labels: dict) -> None:
        self.rng, self.span, self.start_ts, self.addresses, self.labels = rng, span, start_ts, addresses, labels
        self.rows: list[tuple[float, str, str, str, int]] = []

    def during(self, a: float, b: float) -> tuple[float, float]:
        """From share ``a`` of the trace (plus up to 50 s, off the window grid) to share ``b``, 3 min at least."""
        start = a * self.span + self.rng.uniform(0, 50)
        return start, max(b * self.span, start + 3 * MINUTE)

    def label(self, source: str, kind: str, intervals: list[tuple[float, float]], per_minute: float, **extra) -> None:
        shown = [[round(self.start_ts + a, 3), round(self.start_ts + b, 3)] for a, b in intervals]
        self.labels["attackers"][source] = {"kind": kind, "start": shown[0][0], "intervals": shown,
                                            "per_minute": per_minute, **extra}

    def events(self, prefix: str, seed: int, outcomes: bool = True) -> list[RequestEvent]:
        """The rows inside the span as events in ts order (ids ``<prefix>-<seed>-<n>``), statuses drawn from
        their own stream (``outcomes=False``: none, the events otherwise the same); labels ``kinds`` and ``events``."""
        kinds = self.labels["kinds"] = {}
        for source, label in self.labels["attackers"].items():
            kinds.setdefault(label["kind"], []).append(source)
        start_ts, span = self.start_ts, self.span
        rows = sorted((round(start_ts + t, 3), user, ip, kind, outcome) for t, user, ip, kind, outcome in self.rows
                      if 0 <= t < span)
        draw = random.Random(f"outcomes-{seed}")
        events = [
            RequestEvent(request_id=f"{prefix}-{seed}-{i:08d}", user_id=user, ip=ip, request_type=kind, ts=ts,
                         status=draw_status(draw, kind, outcome) if outcomes else None)
            for i, (ts, user, ip, kind, outcome) in enumerate(rows)
        ]
        self.labels["events"] = len(events)
        return events

    def attack(self, kind: str, intervals, per_minute: float, user, request_type, outcome: int = OK) -> str:
        """One attacking IP; ``user()`` and ``request_type()`` give each request's account and type."""
        ip = self.addresses.new()
        self.label(ip, kind, intervals, per_minute)
        for a, b in intervals:
            steady(self.rng, a, b, per_minute, lambda t: self.rows.append((t, user(), ip, request_type(), outcome)))
        return ip


def ipv6_rotation(trace: Trace, a: float = 0.10, b: float = 0.25, per_minute: float = 600) -> None:
    """One /64, a fresh address in it for every request, one account, an honest type mix."""
    rng, addresses = trace.rng, trace.addresses
    prefix = addresses.new_network()
    interval = trace.during(a, b)
    trace.label(Addresses.cidr(prefix), "ipv6_rotation", [interval], per_minute, network=True)
    steady(rng, *interval, per_minute,
           lambda t: trace.rows.append((t, "acct-rotator", addresses.new_v6(prefix), honest_type(rng, None), OK)))


def account_rotation(trace: Trace, a: float = 0.40, b: float = 0.55, per_minute: float = 240) -> None:
    """One IPv4 address cycling through throwaway accounts (``user-`` and 8 digits, all distinct, none seen
    elsewhere), each making one request (two for ~10%), an honest type mix."""
    rng = trace.rng
    seen: set[str] = set()
    current = ["", 0]  # account, requests left

    def account() -> str:
        if current[1] == 0:
            name = f"user-{rng.randrange(10_000_000, 100_000_000)}"
            while name in seen:
                name = f"user-{rng.randrange(10_000_000, 100_000_000)}"
            seen.add(name)
            current[:] = [name, 2 if rng.random() < 0.1 else 1]
        current[1] -= 1
        return current[0]

    trace.attack("account_rotation", [trace.during(a, b)], per_minute, account, lambda: honest_type(rng, None))


def distributed_stuffing(trace: Trace, a: float = 0.62, b: float = 0.75, ips: int = 30, pool: int = 40,
                         attempts_per_minute: float = 3.2) -> list[str]:
    """``ips`` addresses, each ``attempts_per_minute`` logins (steady, jitter) against a shared pool of existing
    honest users active during the attack; every fourth attempt is followed a second later by a ``read`` of the
    same account (login share 0.8; ~4 requests a minute an address). Each address walks the pool from its own
    offset, spread evenly, so every victim is tried from many addresses within minutes. Returns the victims."""
    rng = trace.rng
    interval = trace.during(a, b)
    honest = sorted({user for _, user, _, _, outcome in trace.rows if outcome == HONEST})
    active = sorted({user for t, user, _, _, outcome in trace.rows
                     if outcome == HONEST and interval[0] <= t < interval[1]})
    victims = rng.sample(active, min(pool, len(active)))
    others = sorted(set(honest) - set(victims))
    victims += rng.sample(others, min(pool - len(victims), len(others)))
    per_minute = attempts_per_minute * 1.25

    def address(ip: str, offset: int, phase: int) -> None:
        k = 0

        def emit(t: float) -> None:
            nonlocal k
            victim = victims[(offset + k) % len(victims)]
            trace.rows.append((t, victim, ip, "login", STUFFING))
            if (k + phase) % 4 == 0:
                trace.rows.append((t + rng.uniform(0.8, 1.2), victim, ip, "read", OK))
            k += 1

        trace.label(ip, "distributed_stuffing", [interval], per_minute)
        steady(rng, *interval, attempts_per_minute, emit)

    for i in range(ips):
        address(trace.addresses.new(), i * len(victims) // ips, rng.randrange(4))
    return sorted(victims)
