"""The evasion detectors on hand-built frames, each beside its honest look-alike: address rotation inside
a /64, account rotation, distributed stuffing, failed logins by status, and the graded severity (retry
bursts, crowds)."""

import pytest

from agents.crowd import CrowdBaseline
from agents.detectors import base_frame, detect
from streams.settings import Settings
from tests.unit.test_detectors import W0, W1, honest_population, ip_row

S = Settings(allowlist_cidrs="192.0.2.0/24, 2001:db8:aaaa::/48").detectors
NET = "2a01:4f8:1:2::/64"


def flags_of(rows, settings=S, baseline=None):
    flags, _, scored = detect(base_frame(rows), W0, W1, settings, baseline=baseline)
    return {flag.ip: flag for flag in flags}, scored


def rotating_network(addresses=600, net=NET, requests_each=1, users=1, **extra):
    """``addresses`` addresses of one /64, ``requests_each`` requests each, and the network's own row."""
    prefix = net.split("::")[0]
    rows = [dict(ip_row(f"{prefix}::{i + 1:x}", requests_each), network=net) for i in range(addresses)]
    total = addresses * requests_each
    rows.append(dict(ip_row(net, total, users=users), kind="network", network=net, **extra))
    return rows


def test_a_flood_rotating_addresses_inside_one_64_is_flagged_as_the_network():
    flags, scored = flags_of(honest_population() + rotating_network())
    assert set(flags) == {NET}  # no single address stands out; the network does
    flag = flags[NET]
    assert flag.kind == "network" and "flood" in flag.rules and flag.severity == "high"
    assert flag.features.addresses == 600 and flag.features.top_address_share == pytest.approx(1 / 600, abs=1e-3)
    assert scored.loc[scored["kind"] == "ip", "ip"].str.startswith("2a01").sum() == 600


def test_a_household_64_with_a_few_devices_is_judged_by_its_addresses_only():
    """Three devices of one subscriber: the network row is not judged (too few addresses), the busy device is."""
    net = "2a01:4f8:9:9::/64"
    rows = [dict(ip_row("2a01:4f8:9:9::1", 700), network=net), dict(ip_row("2a01:4f8:9:9::2", 5), network=net),
            dict(ip_row("2a01:4f8:9:9::3", 3), network=net), dict(ip_row(net, 708), kind="network", network=net)]
    flags, _ = flags_of(honest_population() + rows)
    assert set(flags) == {"2a01:4f8:9:9::1"} and flags["2a01:4f8:9:9::1"].kind == "ip"


def test_a_network_dominated_by_one_address_is_left_to_that_address():
    net = "2a01:4f8:7:7::/64"
    rows = [dict(ip_row("2a01:4f8:7:7::1", 700), network=net)]
    rows += [dict(ip_row(f"2a01:4f8:7:7::{i:x}", 2), network=net) for i in range(2, 10)]
    rows.append(dict(ip_row(net, 716), kind="network", network=net))
    assert set(flags_of(honest_population() + rows)[0]) == {"2a01:4f8:7:7::1"}


def test_an_allowlisted_network_is_reported_not_banned():
    net = "2001:db8:aaaa:1::/64"
    flags, _ = flags_of(honest_population() + rotating_network(net=net))
    assert flags[net].allowlisted


def rotator(new_users=240, known=240, requests=264, **extra):
    return dict(ip_row("203.0.113.80", requests, users=known, top_count=140), new_users=new_users,
                accounts_known=known, **extra)


def test_account_rotation_many_never_seen_accounts_a_request_each():
    flags, _ = flags_of(honest_population() + [rotator()])
    flag = flags["203.0.113.80"]
    assert flag.rules == ["account_rotation"] and flag.severity == "high"
    assert flag.features.new_users == 240 and flag.features.new_user_share == 1.0


def test_account_rotation_look_alikes_are_not_flagged():
    nat = rotator(new_users=30, known=300, requests=750)  # carrier-grade NAT: mostly returning accounts
    wave = dict(rotator(new_users=60, known=60, requests=150), ip="203.0.113.81", top_count=70)  # an office opening
    cold = dict(rotator(new_users=0, known=0), ip="203.0.113.82")  # memory not warm: nothing known
    assert flags_of(honest_population() + [nat, wave, cold])[0] == {}
    assert flags_of(honest_population() + [cold])[1].set_index("ip").loc["203.0.113.82", "new_user_share"] != 0.0


def stuffer(i, victims=3, users=3, requests=4, logins=3, **extra):
    return dict(ip_row(f"198.51.100.{i}", requests, users=users, logins=logins, top_type="login", top_count=logins),
                victim_users=victims, **extra)


def test_distributed_stuffing_a_campaign_of_sources_trying_victim_accounts():
    flags, _ = flags_of(honest_population() + [stuffer(i) for i in range(6)])
    assert set(flags) == {f"198.51.100.{i}" for i in range(6)}
    assert all(f.rules == ["distributed_stuffing"] and f.features.victim_users == 3 for f in flags.values())


def test_distributed_stuffing_needs_a_campaign_and_victims_that_dominate():
    assert flags_of(honest_population() + [stuffer(i) for i in range(4)])[0] == {}  # 4 < victim_min_sources
    household = [stuffer(i, victims=1, users=2) for i in range(8)]  # one attacked user at home each
    nat = [dict(ip_row(f"198.51.100.{50 + i}", 400, users=300, logins=40, top_count=200), victim_users=4)
           for i in range(6)]  # a carrier NAT whose users include victims
    assert flags_of(honest_population() + household + nat)[0] == {}


def test_failed_logins_make_stuffing_below_the_login_share_and_clear_an_honest_wave():
    mixed = dict(ip_row("203.0.113.90", 60, users=40, logins=30, top_type="login", top_count=30),
                 logins_known=30, logins_failed=29)  # half of it logins, nearly all failing
    wave = dict(ip_row("203.0.113.91", 60, users=40, logins=50, top_type="login", top_count=50),
                logins_known=50, logins_failed=2)  # an office logging in: they succeed
    flags, _ = flags_of(honest_population() + [mixed, wave])
    assert set(flags) == {"203.0.113.90"} and flags["203.0.113.90"].rules == ["credential_stuffing"]
    assert flags["203.0.113.90"].features.failure_share == pytest.approx(29 / 30, abs=1e-3)
    without = dict(wave, logins_known=0, logins_failed=0)  # no status: judged by the shape, as before
    assert flags_of(honest_population() + [without])[0]["203.0.113.91"].rules == ["credential_stuffing"]


def test_a_retry_burst_against_a_failing_service_is_low_severity():
    burst = dict(ip_row("203.0.113.95", 150, top_count=150, span=40, throttled=50), server_errors=100)
    scraper = ip_row("203.0.113.96", 200, top_count=200, span=58)
    flags, _ = flags_of(honest_population() + [burst, scraper])
    assert flags["203.0.113.95"].severity == "low" and flags["203.0.113.95"].features.error_share == pytest.approx(2 / 3, abs=1e-3)
    assert flags["203.0.113.96"].severity in ("medium", "high")


def test_short_hammering_is_low_and_sustained_hammering_is_not():
    short = ip_row("203.0.113.97", 120, top_count=60, throttled=80, span=20)
    steady = ip_row("203.0.113.98", 240, top_count=90, throttled=140, span=58)
    flags, _ = flags_of(honest_population() + [short, steady])
    assert flags["203.0.113.97"].severity == "low" and flags["203.0.113.98"].severity != "low"


def test_a_flash_crowd_raises_the_scraper_bar_and_lowers_what_rate_rules_find():
    baseline = CrowdBaseline(windows=5)
    for k in range(5):  # five ordinary windows before
        detect(base_frame(honest_population()), W0 - 60 * (5 - k), W1 - 60 * (5 - k), S, baseline=baseline)
    crowd = [dict(row, requests=row["requests"] * 3, top_count=row["top_count"] * 3) for row in honest_population()]
    api = ip_row("203.0.113.99", 180, top_count=175, span=58)  # an honest API client at three times its rate
    hammer = ip_row("203.0.113.98", 240, top_count=90, throttled=140, span=58)
    flags, _ = flags_of(crowd + [api, hammer], baseline=baseline)
    assert "203.0.113.99" not in flags  # 180 < 120 x crowd factor
    assert flags["203.0.113.98"].severity == "low" and flags["203.0.113.98"].features.crowd_factor >= 2
    flood = ip_row("203.0.113.9", 900)
    assert flags_of(crowd + [flood], baseline=baseline)[0]["203.0.113.9"].severity == "high"  # not a crowd's doing


def test_crowd_baseline_counts_a_corrected_window_once():
    baseline = CrowdBaseline(windows=3)
    assert [baseline.factor(60.0 * k, 3.0) for k in range(4)] == [1.0, 1.0, 1.0, 1.0]
    assert baseline.factor(240.0, 9.0) == 3.0
    assert baseline.factor(240.0, 9.0) == 3.0  # reported again: same windows before it
    assert baseline.factor(300.0, 1.0) == 1.0  # never below 1
    assert len(baseline.medians) <= 4
