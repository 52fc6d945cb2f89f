"""Each detector on hand-built feature frames: the attack shapes, the honest look-alikes, the NAT office."""

import pandas as pd
import pytest

from agents.detectors import RULES, base_frame, derive, detect, is_allowlisted, parse_networks, robust_z
from streams.settings import Settings

W0, W1 = 1_732_899_960.0, 1_732_900_020.0  # one 60 s window
SETTINGS = Settings(allowlist_cidrs="192.0.2.0/24, 2001:db8::/32")


def ip_row(ip, requests, users=1, logins=0, top_type="read", top_count=None, throttled=0, blocked=0, span=50.0):
    return dict(
        ip=ip, requests=requests, users=users, logins=logins, top_type=top_type,
        top_count=requests if top_count is None else top_count, throttled=throttled, blocked=blocked,
        first_seen=W0 + 5, last_seen=W0 + 5 + span,
    )


def honest_population(n=300):
    """Home users: 1-12 requests a minute, one user each, a mixed bag of types."""
    return [ip_row(f"10.0.{i // 250}.{i % 250}", 1 + i % 12, top_count=max(1, (1 + i % 12) // 2),
                   logins=i % 3 == 0) for i in range(n)]


def flags_of(rows, settings=SETTINGS):
    flags, population, scored = detect(base_frame(rows), W0, W1, settings)
    return {flag.ip: flag for flag in flags}, population, scored


def test_robust_z_uses_median_and_mad_and_floors_the_scale():
    z, median, mad = robust_z(pd.Series([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert (median, mad) == (3.0, 1.0)
    assert z.iloc[-1] == pytest.approx(97 / 1.4826)
    same, _, mad0 = robust_z(pd.Series([5.0] * 9 + [6.0]))
    assert mad0 == 0.0 and same.iloc[-1] == 1.0  # scale floored at 1: no division by zero


def test_honest_population_raises_no_flag():
    flags, population, _ = flags_of(honest_population())
    assert flags == {}
    assert population.ips == 300 and population.median_requests > 0


def test_flood_from_one_client_is_flagged_with_its_evidence():
    flags, population, _ = flags_of(honest_population() + [ip_row("203.0.113.9", 700, throttled=600)])
    flag = flags["203.0.113.9"]
    assert "flood" in flag.rules and "hammering" in flag.rules
    assert (flag.window_start, flag.window_end) == (W0, W1)
    assert flag.features.requests == 700 and flag.features.refused_share == pytest.approx(600 / 700, abs=1e-3)
    assert flag.scores["z_requests"] > SETTINGS.abuse_z and flag.score == max(flag.scores.values())
    assert flag.population == population and not flag.allowlisted


def test_nat_office_with_many_users_is_not_a_flood_nor_stuffing():
    """An office: 800 requests a minute, but from 90 users at 9 each, with a login wave (30%)."""
    office = ip_row("198.51.100.20", 800, users=90, logins=240, top_count=300, span=59)
    flags, _, scored = flags_of(honest_population() + [office])
    assert flags == {}
    row = scored.set_index("ip").loc["198.51.100.20"]
    assert row["z_requests"] > 50  # an outlier by volume, which alone is not abuse
    assert row["requests_per_user"] < SETTINGS.flood_min_requests_per_user


def test_allowlisted_office_is_reported_but_marked_allowlisted():
    """A known office where one person floods: the flag is reported, marked allow-listed (never banned)."""
    office = ip_row("192.0.2.10", 900, users=3, throttled=700)
    flags, _, _ = flags_of(honest_population() + [office, ip_row("2001:db8::7", 700, throttled=600)])
    assert flags["192.0.2.10"].allowlisted and "flood" in flags["192.0.2.10"].rules
    assert flags["2001:db8::7"].allowlisted


def test_credential_stuffing_many_users_mostly_login():
    stuffer = ip_row("203.0.113.50", 120, users=118, logins=114, top_type="login", top_count=114)
    flags, _, _ = flags_of(honest_population() + [stuffer])
    assert flags["203.0.113.50"].rules[0] == "credential_stuffing"
    assert flags["203.0.113.50"].features.login_share == pytest.approx(0.95)


def test_many_users_without_login_is_not_stuffing():
    proxy = ip_row("203.0.113.51", 120, users=60, logins=10, top_count=50)
    assert flags_of(honest_population() + [proxy])[0] == {}


def test_low_and_slow_needs_a_campaign_of_several_ips():
    slow = [ip_row(f"203.0.113.{100 + i}", 6, users=6, logins=6, top_type="login", top_count=6) for i in range(8)]
    flags, _, _ = flags_of(honest_population() + slow)
    assert set(flags) == {f"203.0.113.{100 + i}" for i in range(8)}
    assert all(f.rules == ["low_and_slow"] for f in flags.values())
    lone = flags_of(honest_population() + slow[: SETTINGS.slow_stuffing_min_ips - 1])[0]
    assert lone == {}, "a few households logging in at once are not a campaign"


def test_scraper_sustained_single_type():
    scraper = ip_row("203.0.113.60", 200, top_type="search", top_count=196, span=58, throttled=100)
    flags, _, _ = flags_of(honest_population() + [scraper])
    assert flags["203.0.113.60"].rules == ["scraper", "hammering"]
    burst = ip_row("203.0.113.61", 200, top_type="search", top_count=196, span=10)  # not sustained
    api = ip_row("203.0.113.62", 60, top_type="read", top_count=58, span=59)  # an API client: too slow
    assert flags_of(honest_population() + [burst, api])[0] == {}


def test_hammering_while_throttled():
    hammer = ip_row("203.0.113.70", 240, top_count=90, throttled=140)
    flags, _, _ = flags_of(honest_population() + [hammer])
    assert flags["203.0.113.70"].rules == ["hammering"]
    unlucky = ip_row("203.0.113.71", 30, top_count=10, throttled=25)  # throttled, but few requests
    assert flags_of(honest_population() + [unlucky])[0] == {}


def test_thresholds_come_from_settings():
    hammer = ip_row("203.0.113.70", 240, top_count=90, throttled=140)
    relaxed = SETTINGS.model_copy(update={"hammer_refused_share": 0.9})
    assert flags_of(honest_population() + [hammer], relaxed)[0] == {}


def test_every_rule_is_named_in_the_evidence_and_flags_sorted_by_score():
    rows = honest_population() + [
        ip_row("203.0.113.9", 700, throttled=600),
        ip_row("203.0.113.70", 240, top_count=90, throttled=140),
    ]
    flags, _, _ = detect(base_frame(rows), W0, W1, SETTINGS)
    assert [f.ip for f in flags] == ["203.0.113.9", "203.0.113.70"]
    assert set(RULES) == {"flood", "credential_stuffing", "low_and_slow", "distributed_stuffing", "account_rotation",
                          "scraper", "hammering"}


def test_empty_window_and_allowlist_parsing():
    assert detect(base_frame([]), W0, W1, SETTINGS)[0] == []
    networks = parse_networks(SETTINGS.allowlist)
    assert is_allowlisted("192.0.2.77", networks) and not is_allowlisted("192.0.3.1", networks)
    assert not is_allowlisted("not-an-ip", networks)
    with pytest.raises(ValueError):
        parse_networks(["300.1.2.0/24"])
    assert derive(base_frame([ip_row("a", 0, users=0)]), 60.0)["login_share"].iloc[0] == 0.0
