"""The detection rules and the severity of what they find, pure: a derived frame in, masks out.

Each rule reads the columns :func:`agents.detectors.derive` makes (one row per address or network of
one window) and the thresholds in :class:`streams.settings_sections.DetectorSettings`; ``crowd`` is
the window's crowd factor (median requests per address over the recent baseline; 1 when normal).
docs/analytics.md explains each rule, its features, its thresholds and what it will not catch.
"""

from typing import Callable

import pandas as pd

from streams.settings_sections import DetectorSettings

__all__ = ["CAMPAIGNS", "RULES", "RULE_SEVERITY", "RATE_RULES", "Rule", "severity"]

Rule = Callable[[pd.DataFrame, DetectorSettings, float], pd.Series]


def flood(f: pd.DataFrame, s: DetectorSettings, crowd: float) -> pd.Series:
    """Many requests, far above the population, and many per account: one client, not an office."""
    return (
        (f["requests"] >= s.flood_min_requests)
        & (f["z_requests"] >= s.abuse_z)
        & (f["requests_per_user"] >= s.flood_min_requests_per_user)
    )


def _failing(f: pd.DataFrame, s: DetectorSettings) -> pd.Series:
    """Rows whose logins carried enough statuses to judge by outcome."""
    return f["logins_known"] >= s.outcome_min_logins


def credential_stuffing(f: pd.DataFrame, s: DetectorSettings, crowd: float) -> pd.Series:
    """Many accounts, few requests each, mostly logins — or, when events carry a status, mostly failed ones."""
    judged = _failing(f, s)
    by_shape = ~judged & (f["login_share"] >= s.stuffing_login_share)
    by_outcome = judged & (f["failure_share"] >= s.stuffing_failure_share) & (f["login_share"] >= 0.3)
    return (f["users"] >= s.stuffing_min_users) & (f["users_per_request"] >= s.stuffing_users_per_request) & (
        by_shape | by_outcome
    )


def _campaign(shape: pd.Series, minimum: int) -> pd.Series:
    """``shape`` only when at least ``minimum`` sources show it in the window."""
    return shape if int(shape.sum()) >= minimum else pd.Series(False, index=shape.index)


def low_and_slow_shape(f: pd.DataFrame, s: DetectorSettings) -> pd.Series:
    """The stuffing shape at a low rate per source (a few accounts each, nearly all logins, failing when known)."""
    failed = ~_failing(f, s) | (f["failure_share"] >= s.stuffing_failure_share)
    return (
        (f["users"] >= s.slow_stuffing_min_users)
        & (f["login_share"] >= s.slow_stuffing_login_share)
        & (f["users_per_request"] >= 0.5)
        & failed
    )


def distributed_shape(f: pd.DataFrame, s: DetectorSettings) -> pd.Series:
    """Sources whose accounts are mostly victims (tried from many networks lately), by logins."""
    logins = (f["login_share"] >= 0.5) | (_failing(f, s) & (f["failure_share"] >= s.stuffing_failure_share))
    return (f["victim_users"] >= s.victim_min_users) & (f["victim_user_share"] >= s.victim_share) & logins


#: Rules that flag a shape only when enough sources show it in the window (a campaign): rule -> (shape,
#: the setting naming how many). With several analytics workers each counts the sources of its shard.
CAMPAIGNS = {
    "low_and_slow": (low_and_slow_shape, "slow_stuffing_min_ips"),
    "distributed_stuffing": (distributed_shape, "victim_min_sources"),
}


def low_and_slow(f: pd.DataFrame, s: DetectorSettings, crowd: float) -> pd.Series:
    """The stuffing shape at a low rate per source, from many sources in the same window."""
    return _campaign(low_and_slow_shape(f, s), s.slow_stuffing_min_ips)


def distributed_stuffing(f: pd.DataFrame, s: DetectorSettings, crowd: float) -> pd.Series:
    """Victim accounts tried from many sources: the sources that try them, when a campaign of them shows."""
    return _campaign(distributed_shape(f, s), s.victim_min_sources)


def account_rotation(f: pd.DataFrame, s: DetectorSettings, crowd: float) -> pd.Series:
    """Many accounts, almost all never active before, each making a request or two: throwaway accounts."""
    return (
        (f["accounts_known"] >= s.rotation_min_users)
        & (f["new_user_share"] >= s.rotation_new_share)
        & (f["requests_per_user"] <= s.rotation_max_requests_per_user)
    )


def scraper(f: pd.DataFrame, s: DetectorSettings, crowd: float) -> pd.Series:
    """A sustained high rate of one request type; the bar rises with a crowd (a sale lifts honest API clients)."""
    return (
        (f["requests"] >= s.scraper_min_requests * max(crowd, 1.0))
        & (f["top_type_share"] >= s.scraper_type_share)
        & (f["span_share"] >= s.scraper_min_span)
    )


def hammering(f: pd.DataFrame, s: DetectorSettings, crowd: float) -> pd.Series:
    """Keeps sending while most of its requests are refused."""
    return (f["requests"] >= s.hammer_min_requests) & (f["refused_share"] >= s.hammer_refused_share)


RULES: dict[str, Rule] = {
    "flood": flood,
    "credential_stuffing": credential_stuffing,
    "low_and_slow": low_and_slow,
    "distributed_stuffing": distributed_stuffing,
    "account_rotation": account_rotation,
    "scraper": scraper,
    "hammering": hammering,
}
RULE_SEVERITY = {
    "flood": "high",
    "credential_stuffing": "high",
    "distributed_stuffing": "high",
    "account_rotation": "high",
    "low_and_slow": "medium",
    "scraper": "medium",
    "hammering": "medium",
}
#: Rules an honest client can trip by being busy: during a crowd (every source busier at once) what they
#: find is low severity. A flood (hundreds of requests per account) is not among them.
RATE_RULES = frozenset({"scraper", "hammering"})
_LEVELS = ("low", "medium", "high")


def severity(row, s: DetectorSettings, crowd: float) -> str:
    """A flagged row's severity: its strongest rule's; a rate rule is low in a crowd, for a client retrying
    a failing service (``error_share``) and, for hammering, in a short burst; a medium flag with a score
    of at least ``severity_high_z`` is high."""
    levels = []
    honest_busy = crowd >= s.crowd_min_factor or row.error_share >= s.retry_error_share
    for rule in row.rules:
        level = RULE_SEVERITY.get(rule, "medium")
        if rule in RATE_RULES and (honest_busy or (rule == "hammering" and row.span_share < s.hammer_min_span)):
            level = "low"
        levels.append(_LEVELS.index(level))
    level = max(levels, default=0)
    if level == 1 and row.score >= s.severity_high_z:
        level = 2
    return _LEVELS[level]
