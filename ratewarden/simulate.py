"""A labelled traffic simulator: honest users, offices behind NAT, honest look-alikes, and attacks.

``ratewarden simulate --minutes M --users N --seed S --out TRACE.jsonl --labels LABELS.json``
writes a trace in the replay format (lines in ts order) and the labels: which sources attack, how and
from when, which IPs are offices and honest crowds, and the allow-list of known offices. Deterministic
for a seed. Shares below are of the trace's length, so any length works (30 minutes and more keeps
the proportions; each attack lasts at least three 60 s windows and starts up to 50 s past its share,
off the window grid).

Honest traffic: users in sessions (a ``login``, then reads, searches and writes at a per-user rate
of a few requests a minute; a few API clients at 20-60 a minute, mostly one type), as Poisson processes:

* offices: up to ~30% of the users, 15-80 each behind one NAT address (every other one allow-listed,
  in 192.0.2.0/24; two in three open with a wave of logins): ``labels["offices"]``;
* ``cgnat`` (crowd): 2 random IPv4 addresses with 250-350 users each (at most a fifth of the users
  each, for small traces): ``labels["crowds"][ip]``;
* ``retry_burst`` (crowd): 3 users on their own IPv4 address who, once each (at shares 0.1-0.3,
  0.35-0.55, 0.6-0.8), send 150 requests of one type within 30 s, the first 100 answered 503;
* everyone else on their own address (10% with a second one), 5% in households of 2-4; ~15% of the
  non-office users on IPv6 instead: a global /64 per household (2a00::-2a0f::) and 1-3 device
  addresses in it per user, each session on one of them;
* ``flash_crowd`` (crowd): from share 0.88 to 0.96 every honest user's Poisson rate is 3x (sessions
  are unchanged: those active then send three times as much), ``labels["crowds"]["flash_crowd"]``.

Attacks (``labels["attackers"]``, bots at a steady pace with +-30% jitter):

* ``flood``: one IP, one account, 700 or 1,200 requests a minute; the first floods twice (a repeat
  offender): 0.15-0.32 and 0.55-0.68, the second 0.75-0.85;
* ``credential_stuffing``: a pool of three IPs, 120 requests a minute each, 95% ``login``, a
  different user name each time, 0.3-0.62;
* ``scraper``: one IP, one account, 180 a minute of ``search`` (0.2-0.5) or 240 of ``read`` (0.45-0.8);
* ``hammering``: one IP, one account at 240 a minute against a limit of 100: mostly throttled, 0.4-0.6;
* ``low_and_slow``: 24 IPs, 6 logins a minute each, a different user name each time, 0.5-0.9;
* ``ipv6_rotation``: one /64 (labelled by its CIDR, ``"network": true``), a fresh address in it for
  every request, one account, 600 a minute, honest type mix, 0.10-0.25;
* ``account_rotation``: one IP, 240 a minute, honest type mix, each request from a throwaway account
  never seen elsewhere (``user-`` and 8 digits; ~10% make a second request), 0.40-0.55;
* ``distributed_stuffing``: 30 IPs, 3.2 logins a minute each (~4 requests with the reads) against a
  pool of 40 honest users active then (``labels["victims"]``), every fourth login followed a second
  later by a ``read`` of that account (login share 0.8), 0.62-0.75.

Outcomes (``status``, unless ``outcomes=False``; then the same trace without them): honest logins 200
(95%) or 401, other honest requests 200 (99%), 404 or 500; stuffing logins (credential_stuffing,
low_and_slow, distributed_stuffing) 401 (97%) or 200; the retry bursts 503 then 200; all else 200.

``labels["kinds"]`` maps each attack kind to its sources (IPs or CIDRs).
"""

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ratewarden.sim_honest import MINUTE, STUFFING, Addresses, honest_type, honest_user, retry_burst
from ratewarden.sim_shapes import Trace, account_rotation, distributed_stuffing, ipv6_rotation
from schemas.events import RequestEvent

__all__ = ["Simulation", "simulate", "write_labels", "ALLOWLIST"]

#: Known offices live in TEST-NET-1; everything else gets addresses drawn at random.
ALLOWLIST = ["192.0.2.0/24"]


@dataclass
class Simulation:
    events: list[RequestEvent]
    labels: dict = field(default_factory=dict)


#: The honest look-alikes: the flash crowd's shares and factor; the retry bursts' shares.
FLASH_CROWD = (0.88, 0.96, 3)
RETRY_BURSTS = ((0.1, 0.3), (0.35, 0.55), (0.6, 0.8))


def _honest(trace: Trace, users: int, flash: tuple[float, float, float]) -> None:
    """Offices, CGNAT crowds, the retry-burst users, then everyone else (some on IPv6), ``users`` in all."""
    rng, span, addresses, out, labels = trace.rng, trace.span, trace.addresses, trace.rows, trace.labels
    crowds = labels["crowds"]

    def person(u: int, ips: list[str], wave=None) -> str:
        honest_user(rng, f"user-{u:05d}", ips, span, wave, out, flash)
        return f"user-{u:05d}"

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
            person(u, [ip], wave)
            u += 1
        labels["offices"][ip] = {"users": size, "allowlisted": allowlisted, "login_wave": wave is not None}
    office_users = u
    # Carrier-grade NAT: two addresses with hundreds of ordinary users behind each.
    for _ in range(2):
        size = min(rng.randint(250, 350), users // 5, users - u)
        if size <= 0:
            break
        ip = addresses.new()
        for _ in range(size):
            person(u, [ip])
            u += 1
        crowds[ip] = {"kind": "cgnat", "users": size}
    # Three users on their own address who, once, retry a failing request 150 times within 30 s.
    for a, b in RETRY_BURSTS:
        if u >= users:
            break
        ip, at = addresses.new(), rng.uniform(a, b) * span
        user = person(u, [ip])
        u += 1
        retry_burst(rng, user, ip, at, out)
        crowds[ip] = {"kind": "retry_burst", "start": round(trace.start_ts + at, 3), "user": user}
    # Everyone else: own address (some with a second one), some households of 2-4 users; ~15% of the
    # non-office users on IPv6: a /64 per household, 1-3 device addresses in it per user.
    v6_share = min(1.0, 0.15 * (users - office_users) / max(1, users - u))
    while u < users:
        household = rng.randint(2, 4) if rng.random() < 0.05 else 1
        prefix = addresses.new_network() if rng.random() < v6_share else None
        ips = [addresses.new()] if prefix is None else []
        for _ in range(min(household, users - u)):
            if prefix is None:
                person(u, ips + ([addresses.new()] if rng.random() < 0.1 else []))
            else:
                person(u, [addresses.new_v6(prefix) for _ in range(rng.randint(1, 3))])
            u += 1


def simulate(
    minutes: float = 30.0, users: int = 2000, seed: int = 7, start_ts: float = 1_732_900_000.0,
    outcomes: bool = True,
) -> Simulation:
    """The trace (ts order, replay format) and its labels; ``outcomes=False``: the same trace without statuses."""
    rng = random.Random(seed)
    span = minutes * MINUTE
    labels: dict = {"seed": seed, "minutes": minutes, "users": users, "start_ts": start_ts,
                    "end_ts": start_ts + span, "allowlist": ALLOWLIST, "attackers": {}, "offices": {}, "crowds": {}}
    trace = Trace(rng, span, start_ts, Addresses(rng), labels)
    lo, hi, factor = FLASH_CROWD
    _honest(trace, users, (lo * span, hi * span, factor))
    labels["crowds"]["flash_crowd"] = {"kind": "flash_crowd", "start": round(start_ts + lo * span, 3),
                                       "end": round(start_ts + hi * span, 3), "factor": factor}

    attack, during = trace.attack, trace.during

    def fixed(value: str):
        return lambda: value

    victims = iter(rng.sample(range(1_000_000, 10_000_000), 200_000))

    def victim() -> str:
        return f"user-{next(victims)}"

    attack("flood", [during(0.15, 0.32), during(0.55, 0.68)], 700, fixed("acct-flood-1"),  # comes back
           lambda: honest_type(rng, None))
    attack("flood", [during(0.75, 0.85)], 1200, fixed("acct-flood-2"), fixed("read"))
    pool = during(0.3, 0.62)
    for _ in range(3):
        attack("credential_stuffing", [pool], 120, victim, lambda: "login" if rng.random() < 0.95 else "read", STUFFING)
    attack("scraper", [during(0.2, 0.5)], 180, fixed("acct-crawler-0"), fixed("search"))
    attack("scraper", [during(0.45, 0.8)], 240, fixed("acct-crawler-1"), fixed("read"))
    attack("hammering", [during(0.4, 0.6)], 240, fixed("acct-hammer"), lambda: rng.choice(("read", "search", "write")))
    campaign = during(0.5, 0.9)
    for _ in range(24):
        attack("low_and_slow", [campaign], 6, victim, fixed("login"), STUFFING)
    ipv6_rotation(trace)
    account_rotation(trace)
    labels["victims"] = distributed_stuffing(trace)
    events = trace.events("sim", seed, outcomes)
    return Simulation(events, labels)


def write_labels(path: Path, labels: dict) -> None:
    Path(path).write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n")
