"""Abuse detection, pure: one window's feature frame (addresses and networks) -> flags with their evidence.

No clock, topic or store here: the window and the thresholds are arguments, so every detector is
unit-tested on hand-built frames. The analytics shell (``agents.merge_stage``) builds the frame when a
window closes by event time and publishes what :func:`detect` returns.

Input columns (one row per subject): :data:`BASE_COLUMNS`; the account and network columns default
to "not known" when a frame lacks them (:func:`base_frame`). :func:`derive` adds the ratios the rules
read. A network row (``kind="network"``, its CIDR in ``ip``) is judged only when it has at least
``network_min_addresses`` addresses and none of them carries more than ``network_max_top_share`` of
its requests: otherwise its busiest address is the subject, and is judged as one.

Scores are robust z-scores against the window's population of addresses: ``(x - median) / (1.4826 *
MAD)``, the scale floored at 1 so a population where most look alike does not divide by zero.
``score`` is the largest of them (never below 0). The rules and their severities are in
:mod:`agents.detector_rules`. Subjects inside the allow-list (known proxies, offices) are flagged
with ``allowlisted=True``: reported, never banned.
"""

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from agents.allowlist import Allowlist, Network, covers, parse_networks
from agents.crowd import CrowdBaseline
from agents.detector_rules import RULES, severity
from schemas.flags import IpFeatures, IpFlag, Population
from streams.settings_sections import DetectorSettings

__all__ = [
    "BASE_COLUMNS",
    "DEFAULTS",
    "RULES",
    "Network",
    "base_frame",
    "derive",
    "detect",
    "is_allowlisted",
    "judged",
    "parse_networks",
    "robust_z",
]

BASE_COLUMNS = [
    "ip", "requests", "users", "logins", "top_type", "top_count", "throttled", "blocked", "first_seen", "last_seen",
    "kind", "network", "new_users", "accounts_known", "victim_users", "logins_known", "logins_failed", "server_errors",
]
#: What a row without the account and network columns means: an address, nothing known about its accounts.
DEFAULTS = {"kind": "ip", "network": "", "new_users": 0, "accounts_known": 0, "victim_users": 0,
            "logins_known": 0, "logins_failed": 0, "server_errors": 0}
#: 1 / Phi^-1(3/4): makes the MAD a consistent estimate of the standard deviation for normal data.
MAD_SCALE = 1.4826

def is_allowlisted(subject: str, networks: list[Network] | Allowlist) -> bool:
    """Whether ``subject`` (an address, or a network's CIDR) is allow-listed by ``networks``: a list of
    networks, or the live :class:`agents.allowlist.Allowlist` (the rule is :func:`agents.allowlist.covers`)."""
    if isinstance(networks, Allowlist):
        return networks.contains(subject)
    return bool(networks) and covers(subject, networks)


def base_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """A frame with exactly :data:`BASE_COLUMNS` (tests and the analytics shell build it the same way)."""
    frame = pd.DataFrame.from_records(list(rows), columns=BASE_COLUMNS)
    for column, default in DEFAULTS.items():
        missing = frame[column].isna()
        if missing.all():
            frame[column] = default
        elif missing.any():
            frame[column] = frame[column].fillna(default)
    return frame


def robust_z(values: pd.Series, floor: float = 1.0, of: pd.Series | None = None) -> tuple[pd.Series, float, float]:
    """(z-scores, median, MAD) of ``values`` against the population ``of`` (default: ``values`` itself);
    the scale ``1.4826 * MAD`` is at least ``floor``."""
    population = values if of is None else of
    median = float(population.median()) if len(population) else 0.0
    mad = float((population - median).abs().median()) if len(population) else 0.0
    return (values - median) / max(MAD_SCALE * mad, floor), median, mad


def _network_columns(f: pd.DataFrame) -> None:
    """``addresses`` and ``top_address_share`` of each network row, from the address rows inside it."""
    f["addresses"], f["top_address_share"] = 1, 1.0
    networks = f["kind"] == "network"
    if not networks.any():
        return
    members = f[(f["kind"] == "ip") & (f["network"] != "")].groupby("network")["requests"].agg(["count", "max"])
    subject = f.loc[networks, "ip"]
    f.loc[networks, "addresses"] = subject.map(members["count"]).fillna(0).astype(int).to_numpy()
    top = subject.map(members["max"]).fillna(0).to_numpy()
    f.loc[networks, "top_address_share"] = top / f.loc[networks, "requests"].clip(lower=1).to_numpy()


def _share(part: pd.Series, whole: pd.Series) -> pd.Series:
    """``part / whole``, NaN where ``whole`` is 0 (not known), so a rule comparing it is false there."""
    return part / whole.where(whole > 0)


def derive(frame: pd.DataFrame, window: float) -> pd.DataFrame:
    """The base frame plus the ratios and z-scores the rules and the evidence use."""
    f = frame.copy()
    _network_columns(f)
    requests = f["requests"].clip(lower=1).astype(float)
    users = f["users"].clip(lower=1).astype(float)
    f["rate"] = f["requests"] / window
    f["requests_per_user"] = requests / users
    f["users_per_request"] = f["users"] / requests
    f["login_share"] = f["logins"] / requests
    f["top_type_share"] = f["top_count"] / requests
    f["refused_share"] = (f["throttled"] + f["blocked"]) / requests
    f["span_share"] = ((f["last_seen"] - f["first_seen"]) / window).clip(0.0, 1.0)
    f["new_user_share"] = _share(f["new_users"], f["accounts_known"])
    f["victim_user_share"] = f["victim_users"] / users
    f["failure_share"] = _share(f["logins_failed"], f["logins_known"])
    f["error_share"] = f["server_errors"] / requests
    addresses = f["kind"] == "ip"
    for column in ("requests", "requests_per_user", "users"):
        values = f[column].astype(float)
        f[f"z_{column}"], *_ = robust_z(values, of=values[addresses])
    f["score"] = f[["z_requests", "z_requests_per_user", "z_users"]].max(axis=1).clip(lower=0.0)
    return f


def judged(f: pd.DataFrame, s: DetectorSettings) -> pd.Series:
    """Rows the rules may flag: every address; a network only when it is many addresses, none dominant."""
    return (f["kind"] == "ip") | (
        (f["addresses"] >= s.network_min_addresses) & (f["top_address_share"] <= s.network_max_top_share)
    )


def population(frame: pd.DataFrame) -> Population:
    """The robust statistics of the window's addresses (network rows are not part of the population)."""
    addresses = frame[frame["kind"] == "ip"] if "kind" in frame else frame
    _, median_requests, mad_requests = robust_z(addresses["requests"].astype(float))
    _, median_per_user, mad_per_user = robust_z(addresses["requests_per_user"].astype(float))
    return Population(len(addresses), median_requests, mad_requests, median_per_user, mad_per_user)


def detect(
    frame: pd.DataFrame,
    window_start: float,
    window_end: float,
    settings: DetectorSettings,
    networks: list[Network] | Allowlist | None = None,
    baseline: CrowdBaseline | None = None,
) -> tuple[list[IpFlag], Population, pd.DataFrame]:
    """Flags of one window (highest score first), its population statistics and the scored frame.

    ``networks``: the allow-list (a live :class:`agents.allowlist.Allowlist`, or networks); default: the
    settings' static ``allowlist``. ``baseline``: the recent windows, for the crowd factor (:mod:`agents.crowd`); without it the factor is 1."""
    window = window_end - window_start
    if frame.empty:
        return [], Population(0, 0.0, 0.0, 0.0, 0.0), derive(frame, window)
    f = derive(frame, window)
    stats = population(f)
    crowd = baseline.factor(window_start, stats.median_requests) if baseline is not None else 1.0
    eligible = judged(f, settings)
    hits = pd.DataFrame({name: rule(f[eligible], settings, crowd) for name, rule in RULES.items()}, index=f.index[eligible])
    hits = hits.reindex(f.index, fill_value=False).astype(bool)
    f["rules"] = [[name for name, hit in zip(hits.columns, row) if hit] for row in hits.to_numpy()]
    flagged = f[hits.any(axis=1).to_numpy()].sort_values(["score", "ip"], ascending=[False, True])
    networks = networks if networks is not None else parse_networks(settings.allowlist)
    flags = [
        _flag(row, window_start, window_end, stats, networks, severity(row, settings, crowd), crowd)
        for row in flagged.itertuples(index=False)
    ]
    return flags, stats, f


def _flag(row, window_start: float, window_end: float, stats: Population, networks: list[Network] | Allowlist,
          level: str, crowd: float) -> IpFlag:
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
        addresses=int(row.addresses),
        top_address_share=round(float(row.top_address_share), 4),
        new_users=int(row.new_users),
        new_user_share=_maybe(row.new_user_share),
        victim_users=int(row.victim_users),
        failure_share=_maybe(row.failure_share),
        error_share=round(float(row.error_share), 4),
        crowd_factor=round(float(crowd), 3),
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
        kind=str(row.kind),
        severity=level,
    )


def _round(value) -> float:
    value = float(value)
    return round(value, 3) if np.isfinite(value) else 0.0


def _maybe(value) -> float | None:
    """A share that may not be known (NaN): None then."""
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None
