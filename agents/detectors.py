"""Abuse detection, pure: one window's per-IP feature frame -> flags with their evidence.

No clock, topic or store here: the window and the thresholds are arguments, so every detector is
unit-tested on hand-built frames. The analytics shell (``agents.analytics``) builds the frame when a
window closes by event time and publishes what :func:`detect` returns.

Input columns (one row per IP): ``ip, requests, users, logins, top_type, top_count, throttled,
blocked, first_seen, last_seen``. :func:`derive` adds the ratios the rules read.

Scores are robust z-scores against the window's population of IPs: ``(x - median) / (1.4826 *
MAD)``, the scale floored at 1 so a population where most IPs look alike does not divide by zero.
``score`` is the largest of them (never below 0). Rules (thresholds in ``streams.settings``):

* ``flood``: many requests, far above the population (``abuse_z``), and many per user: one client,
  not an office of many users behind one NAT address.
* ``credential_stuffing``: many distinct users, mostly ``login``, few requests per user.
* ``low_and_slow``: the same shape at a low rate per IP (a few users each), when at least
  ``slow_stuffing_min_ips`` IPs show it in the same window: a campaign spread over many addresses.
* ``scraper``: a sustained high rate (active over much of the window) of one request type.
* ``hammering``: keeps sending while most of its requests are throttled or blocked.

IPs inside the allow-list (known proxies, offices) are flagged with ``allowlisted=True``: reported,
never banned.
"""

import ipaddress
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from schemas.flags import IpFeatures, IpFlag, Population
from streams.settings_sections import DetectorSettings

__all__ = [
    "BASE_COLUMNS",
    "RULES",
    "Network",
    "base_frame",
    "derive",
    "detect",
    "is_allowlisted",
    "parse_networks",
    "robust_z",
]

BASE_COLUMNS = [
    "ip", "requests", "users", "logins", "top_type", "top_count", "throttled", "blocked", "first_seen", "last_seen",
]
#: 1 / Phi^-1(3/4): makes the MAD a consistent estimate of the standard deviation for normal data.
MAD_SCALE = 1.4826

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """The allow-list as networks; a bad CIDR raises ValueError naming it."""
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def is_allowlisted(ip: str, networks: list[Network]) -> bool:
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def base_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """A frame with exactly :data:`BASE_COLUMNS` (tests and the analytics shell build it the same way)."""
    return pd.DataFrame.from_records(list(rows), columns=BASE_COLUMNS)


def robust_z(values: pd.Series, floor: float = 1.0) -> tuple[pd.Series, float, float]:
    """(z-scores, median, MAD) of ``values``; the scale ``1.4826 * MAD`` is at least ``floor``."""
    median = float(values.median()) if len(values) else 0.0
    mad = float((values - median).abs().median()) if len(values) else 0.0
    return (values - median) / max(MAD_SCALE * mad, floor), median, mad


def derive(frame: pd.DataFrame, window: float) -> pd.DataFrame:
    """The base frame plus the ratios and z-scores the rules and the evidence use."""
    f = frame.copy()
    requests = f["requests"].clip(lower=1).astype(float)
    users = f["users"].clip(lower=1).astype(float)
    f["rate"] = f["requests"] / window
    f["requests_per_user"] = requests / users
    f["users_per_request"] = f["users"] / requests
    f["login_share"] = f["logins"] / requests
    f["top_type_share"] = f["top_count"] / requests
    f["refused_share"] = (f["throttled"] + f["blocked"]) / requests
    f["span_share"] = ((f["last_seen"] - f["first_seen"]) / window).clip(0.0, 1.0)
    f["z_requests"], *_ = robust_z(f["requests"].astype(float))
    f["z_requests_per_user"], *_ = robust_z(f["requests_per_user"])
    f["z_users"], *_ = robust_z(f["users"].astype(float))
    f["score"] = f[["z_requests", "z_requests_per_user", "z_users"]].max(axis=1).clip(lower=0.0)
    return f


Rule = Callable[[pd.DataFrame, DetectorSettings, float], pd.Series]


def flood(f: pd.DataFrame, s: DetectorSettings, window: float) -> pd.Series:
    return (
        (f["requests"] >= s.flood_min_requests)
        & (f["z_requests"] >= s.abuse_z)
        & (f["requests_per_user"] >= s.flood_min_requests_per_user)
    )


def credential_stuffing(f: pd.DataFrame, s: DetectorSettings, window: float) -> pd.Series:
    return (
        (f["users"] >= s.stuffing_min_users)
        & (f["login_share"] >= s.stuffing_login_share)
        & (f["users_per_request"] >= s.stuffing_users_per_request)
    )


def low_and_slow(f: pd.DataFrame, s: DetectorSettings, window: float) -> pd.Series:
    shape = (
        (f["users"] >= s.slow_stuffing_min_users)
        & (f["login_share"] >= s.slow_stuffing_login_share)
        & (f["users_per_request"] >= 0.5)
    )
    if int(shape.sum()) < s.slow_stuffing_min_ips:
        return pd.Series(False, index=f.index)
    return shape


def scraper(f: pd.DataFrame, s: DetectorSettings, window: float) -> pd.Series:
    return (
        (f["requests"] >= s.scraper_min_requests)
        & (f["top_type_share"] >= s.scraper_type_share)
        & (f["span_share"] >= s.scraper_min_span)
    )


def hammering(f: pd.DataFrame, s: DetectorSettings, window: float) -> pd.Series:
    return (f["requests"] >= s.hammer_min_requests) & (f["refused_share"] >= s.hammer_refused_share)


RULES: dict[str, Rule] = {
    "flood": flood,
    "credential_stuffing": credential_stuffing,
    "low_and_slow": low_and_slow,
    "scraper": scraper,
    "hammering": hammering,
}


def population(frame: pd.DataFrame) -> Population:
    _, median_requests, mad_requests = robust_z(frame["requests"].astype(float))
    _, median_per_user, mad_per_user = robust_z(frame["requests_per_user"].astype(float))
    return Population(len(frame), median_requests, mad_requests, median_per_user, mad_per_user)


def detect(
    frame: pd.DataFrame,
    window_start: float,
    window_end: float,
    settings: DetectorSettings,
    networks: list[Network] | None = None,
) -> tuple[list[IpFlag], Population, pd.DataFrame]:
    """Flags of one window (highest score first), its population statistics and the scored frame."""
    window = window_end - window_start
    if frame.empty:
        return [], Population(0, 0.0, 0.0, 0.0, 0.0), derive(frame, window)
    f = derive(frame, window)
    hits = pd.DataFrame({name: rule(f, settings, window) for name, rule in RULES.items()}, index=f.index)
    f["rules"] = [[name for name, hit in zip(hits.columns, row) if hit] for row in hits.to_numpy()]
    stats = population(f)
    flagged = f[hits.any(axis=1).to_numpy()].sort_values(["score", "ip"], ascending=[False, True])
    networks = networks if networks is not None else parse_networks(settings.allowlist)
    flags = [_flag(row, window_start, window_end, stats, networks) for row in flagged.itertuples(index=False)]
    return flags, stats, f


def _flag(row, window_start: float, window_end: float, stats: Population, networks: list[Network]) -> IpFlag:
    features = IpFeatures(
        requests=int(row.requests),
        rate=round(float(row.rate), 4),
        users=int(row.users),
        requests_per_user=round(float(row.requests_per_user), 4),
        login_share=round(float(row.login_share), 4),
        top_type=str(row.top_type),
        top_type_share=round(float(row.top_type_share), 4),
        throttled=int(row.throttled),
        blocked=int(row.blocked),
        refused_share=round(float(row.refused_share), 4),
        first_seen=float(row.first_seen),
        last_seen=float(row.last_seen),
    )
    scores = {
        "z_requests": _round(row.z_requests),
        "z_requests_per_user": _round(row.z_requests_per_user),
        "z_users": _round(row.z_users),
    }
    return IpFlag(
        ip=str(row.ip),
        window_start=window_start,
        window_end=window_end,
        score=_round(row.score),
        rules=list(row.rules),
        allowlisted=is_allowlisted(str(row.ip), networks),
        features=features,
        scores=scores,
        population=stats,
    )


def _round(value) -> float:
    value = float(value)
    return round(value, 3) if np.isfinite(value) else 0.0
