"""Stage 1's account and network features of a closed window (agents.account_features), pure."""

from agents.account_features import WindowFeatures, network_of
from agents.account_memory import AccountMemory
from agents.ip_windows import WindowAggregator
from streams.settings import Settings

W = 60.0
T0 = 1_732_900_020.0


def settings(**update):
    return Settings(**update).detectors


def aggregator(**update) -> WindowAggregator:
    return WindowAggregator(W, 0.0, WindowFeatures(settings(**update), AccountMemory(capacity=1_000)))


def close_window(agg: WindowAggregator, index: int, requests, offset=0):
    """Fold ``(ip, user[, type[, status]])`` requests into window ``index`` and close it: its subjects."""
    for i, r in enumerate(requests):
        ip, user, kind, status = (*r, "read", None)[:4]
        agg.add(ip, user, kind, "allow", T0 + index * W + 1 + i * 0.001, offset + i, status)
    [(_, ips)] = agg.close(watermark=T0 + (index + 1) * W)
    return ips


def test_network_of_ipv6_64_and_optional_ipv4_24():
    assert network_of("2a01:4f8:1:2:aaaa::1") == "2a01:4f8:1:2::/64"
    assert network_of("203.0.113.9") == ""  # IPv4 not aggregated by default
    assert network_of("203.0.113.9", 64, 24) == "203.0.113.0/24"
    assert network_of("::ffff:203.0.113.9", 64, 24) == "203.0.113.0/24"  # mapped addresses are IPv4
    assert network_of("not-an-ip") == ""


def test_addresses_of_a_64_are_also_one_network_window_with_their_accounts_united():
    ips = close_window(aggregator(), 0, [(f"2a01:4f8:1:2::{i}", "bot") for i in range(1, 9)] + [("203.0.113.9", "u")])
    net = ips["2a01:4f8:1:2::/64"]
    assert net.kind == "network" and net.requests == 8 and net.users == {"bot"}
    assert all(ips[f"2a01:4f8:1:2::{i}"].network == "2a01:4f8:1:2::/64" for i in range(1, 9))
    assert ips["203.0.113.9"].network == "" and "203.0.113.9/32" not in ips
    keys = {key: p.kind for key, p in aggregator().partials(0, [(T0, ips)])}
    assert keys == {"2a01:4f8:1:2::/64": "network", "203.0.113.9": "ip"}  # addresses keyed by their network


def test_new_accounts_are_counted_only_once_the_memory_is_warm():
    agg = aggregator(account_warmup=120.0)
    regulars = [("198.51.100.7", f"regular-{i}") for i in range(10)]
    first = close_window(agg, 0, regulars)
    assert first["198.51.100.7"].accounts_known == 0  # cold: nothing said
    close_window(agg, 1, regulars)
    close_window(agg, 2, regulars)
    ips = close_window(agg, 3, regulars + [("198.51.100.8", f"throwaway-{i}") for i in range(30)])
    assert (ips["198.51.100.7"].new_users, ips["198.51.100.7"].accounts_known) == (0, 10)
    assert (ips["198.51.100.8"].new_users, ips["198.51.100.8"].accounts_known) == (30, 30)


def test_victims_are_accounts_tried_from_many_networks_and_stay_victims_for_a_while():
    agg = aggregator(victim_min_networks=3, victim_memory=120.0)
    tries = [(f"198.51.100.{i}", "victim", "login", 401) for i in range(1, 4)] + [("198.51.100.1", "other", "login", 401)]
    ips = close_window(agg, 0, tries)
    assert ips["198.51.100.1"].victim_users == 1 and ips["198.51.100.1"].logins_failed == 2
    later = close_window(agg, 1, [("198.51.100.9", "victim", "login", 401)])  # one source: still a victim
    assert later["198.51.100.9"].victim_users == 1
    gone = close_window(agg, 3, [("198.51.100.9", "victim", "login", 200)])  # memory over
    assert gone["198.51.100.9"].victim_users == 0 and gone["198.51.100.9"].logins_known == 1
    assert agg.features.victims == {}


def test_statuses_count_failed_logins_and_server_errors():
    ips = close_window(aggregator(), 0, [("203.0.113.5", "u", "login", 401), ("203.0.113.5", "u", "read", 503),
                                         ("203.0.113.5", "u", "login", 200), ("203.0.113.5", "u", "read", None)])
    acc = ips["203.0.113.5"]
    assert (acc.logins_known, acc.logins_failed, acc.server_errors) == (2, 1, 1)
