"""Honest users of known rate profiles, plus a few attacks: traffic whose right tiers are known.

:func:`simulate_profiles` draws each honest user from a named profile (:data:`PROFILES`): a mean rate
a minute, how much one user's rate varies around it, and bursts (episodes at ``burst_factor`` times
the rate, ``burst_share`` of the time). Each user has an address of its own and one session covering
most of the trace. ``labels["profiles"][user]`` is the profile's name, so a tiering of the users can be
scored against it (``tests/unit/test_advisor.py``). The attacks reuse :mod:`ratewarden.sim_shapes` and
are labelled as :func:`ratewarden.simulate.simulate` labels them (``labels["attackers"]``, ``["kinds"]``);
one, ``account_takeover``, sends from a new address under an honest light user's account.

It is a separate function so that :func:`ratewarden.simulate.simulate` keeps its output byte for byte.
"""

import math
import random
from typing import NamedTuple

from ratewarden.sim_honest import HONEST, MINUTE, STUFFING, Addresses, honest_type
from ratewarden.sim_shapes import Trace, ipv6_rotation
from ratewarden.simulate import Simulation

__all__ = ["PROFILES", "Profile", "simulate_profiles"]


class Profile(NamedTuple):
    per_minute: float  # the profile's mean rate
    spread: float  # sigma of log(rate) between its users
    burst_factor: float
    burst_share: float
    weight: float  # share of the users
    api: bool = False  # mostly one request type


PROFILES: dict[str, Profile] = {
    "light": Profile(1.0, 0.25, 3.0, 0.05, 0.40),
    "regular": Profile(5.0, 0.25, 3.0, 0.10, 0.35),
    "heavy": Profile(20.0, 0.2, 2.5, 0.10, 0.18),
    "api": Profile(90.0, 0.15, 1.5, 0.20, 0.07, api=True),
}


def _draw_profile(rng: random.Random) -> str:
    x = rng.random() * sum(p.weight for p in PROFILES.values())
    for name, profile in PROFILES.items():
        x -= profile.weight
        if x < 0:
            return name
    return name


def _user(rng: random.Random, user: str, ip: str, profile: Profile, span: float, out: list) -> None:
    """One session over most of the trace; Poisson at the user's rate, in bursts ``burst_factor`` times faster
    (bursts of about a minute, ``burst_share`` of the time)."""
    rate = profile.per_minute * math.exp(rng.gauss(0, profile.spread))
    api_type = rng.choice(("read", "search")) if profile.api else None
    start = rng.uniform(0, 0.2) * span
    end = span - rng.uniform(0, 0.2) * span
    t, bursting = start, False
    switch = t + rng.expovariate(1 / (MINUTE * (1 - profile.burst_share) / profile.burst_share))
    while True:
        t += rng.expovariate(rate * (profile.burst_factor if bursting else 1) / MINUTE)
        while t >= switch:  # a burst starts or ends (memoryless: the next arrival is drawn again)
            t, bursting = switch, not bursting
            mean = MINUTE if bursting else MINUTE * (1 - profile.burst_share) / profile.burst_share
            switch = t + rng.expovariate(1 / mean)
            t += rng.expovariate(rate * (profile.burst_factor if bursting else 1) / MINUTE)
        if t >= end:
            return
        out.append((t, user, ip, honest_type(rng, api_type), HONEST))


def simulate_profiles(minutes: float = 30.0, users: int = 600, seed: int = 11, start_ts: float = 1_732_900_000.0,
                      attacks: bool = True) -> Simulation:
    """The trace (ts order, replay format) and labels: ``profiles`` (user -> profile name), ``attackers``,
    ``kinds``, and ``takeover`` (the honest account the account-takeover attack uses)."""
    rng = random.Random(seed)
    span = minutes * MINUTE
    labels: dict = {"seed": seed, "minutes": minutes, "users": users, "start_ts": start_ts,
                    "end_ts": start_ts + span, "attackers": {}, "profiles": {}}
    trace = Trace(rng, span, start_ts, Addresses(rng), labels)
    for u in range(users):
        name, user = _draw_profile(rng), f"user-{u:05d}"
        labels["profiles"][user] = name
        _user(rng, user, trace.addresses.new(), PROFILES[name], span, trace.rows)
    if attacks:
        victims = iter(rng.sample(range(1_000_000, 10_000_000), 100_000))
        trace.attack("flood", [trace.during(0.2, 0.4)], 700, lambda: "acct-flood-1", lambda: "read")
        trace.attack("scraper", [trace.during(0.3, 0.7)], 180, lambda: "acct-crawler-0", lambda: "search")
        for _ in range(3):
            trace.attack("credential_stuffing", [trace.during(0.4, 0.7)], 120, lambda: f"user-{next(victims)}",
                         lambda: "login", STUFFING)
        takeover = next(u for u, p in labels["profiles"].items() if p == "light")
        trace.attack("account_takeover", [trace.during(0.5, 0.8)], 120, lambda: takeover, lambda: "read")
        labels["takeover"] = takeover
        ipv6_rotation(trace, 0.1, 0.25, 600)
    events = trace.events("prof", seed)
    return Simulation(events, labels)
