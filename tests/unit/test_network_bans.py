"""Network (CIDR) bans: the index (agents.network_bans) and how the limiter's Blocklist uses it."""

import ipaddress
import logging
import random

import pytest

from agents.network_bans import NetworkBans, normalize_cidr
from agents.blocklist_entries import Blocklist
from schemas.limits import BlocklistEntry


def ban(subject: str, start: float = 0.0, ttl: float | None = None, reason: str = "manual",
        kind: str = "network") -> BlocklistEntry:
    return BlocklistEntry(subject=subject, kind=kind, reason=reason, start=start, ttl=ttl)


def index(*cidrs: str) -> NetworkBans:
    bans = NetworkBans()
    for cidr in cidrs:
        bans.put(cidr, ban(cidr))
    return bans


@pytest.mark.parametrize("cidr, inside, outside", [
    ("198.51.100.0/24", ["198.51.100.0", "198.51.100.7", "198.51.100.255"], ["198.51.101.0", "198.51.99.255"]),
    ("2001:db8:1:2::/64", ["2001:db8:1:2::", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:DB8:1:2::7"],
     ["2001:db8:1:3::", "2001:db8:1:1:ffff:ffff:ffff:ffff"]),
    ("203.0.113.9/32", ["203.0.113.9"], ["203.0.113.8", "203.0.113.10"]),
    ("2001:db8::9/128", ["2001:db8::9", "2001:db8:0:0:0:0:0:9"], ["2001:db8::8", "2001:db8::a"]),
])
def test_an_address_is_banned_exactly_when_inside(cidr, inside, outside):
    bans = index(cidr)
    for ip in inside:
        assert bans.lookup(ip) is not None, ip
    for ip in outside:
        assert bans.lookup(ip) is None, ip


def test_random_addresses_agree_with_ipaddress():
    rng = random.Random(5)
    networks = [ipaddress.ip_network((rng.getrandbits(32), rng.randrange(8, 33)), strict=False) for _ in range(300)]
    networks += [ipaddress.ip_network((rng.getrandbits(128), rng.randrange(16, 129)), strict=False) for _ in range(300)]
    bans = index(*(str(n) for n in networks))
    for _ in range(2000):
        network = rng.choice(networks)
        for address in (network[rng.randrange(network.num_addresses)],
                         ipaddress.ip_address(rng.getrandbits(32 if network.version == 4 else 128) | 0)):
            if address.version != network.version:
                continue
            containing = [n for n in networks if n.version == address.version and address in n]
            expected = str(max(containing, key=lambda n: n.prefixlen)) if containing else None
            found = bans.lookup(str(address))
            assert (found and found.subject) == expected, address


def test_the_most_specific_network_wins_and_matches_lists_all_longest_first():
    bans = index("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "2001:db8::/32", "2001:db8:1::/48")
    assert bans.lookup("10.1.2.3").subject == "10.1.2.0/24"
    assert bans.lookup("10.1.3.3").subject == "10.1.0.0/16"
    assert bans.lookup("10.2.3.3").subject == "10.0.0.0/8"
    assert [e.subject for e in bans.matches("10.1.2.3")] == ["10.1.2.0/24", "10.1.0.0/16", "10.0.0.0/8"]
    assert bans.lookup("2001:db8:1::5").subject == "2001:db8:1::/48"
    assert bans.lookup("2001:db8:2::5").subject == "2001:db8::/32"


def test_slash_zero_covers_its_whole_family_only():
    bans = index("0.0.0.0/0")
    assert bans.lookup("0.0.0.0") and bans.lookup("255.255.255.255") and bans.lookup("8.8.8.8")
    assert bans.lookup("::1") is None and bans.lookup("2001:db8::1") is None
    bans = index("::/0")
    assert bans.lookup("::") and bans.lookup("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
    assert bans.lookup("8.8.8.8") is None


def test_ipv4_mapped_addresses_are_their_ipv4_address():
    """``::ffff:a.b.c.d`` is covered by IPv4 bans (a /p ranks as /96+p) and by IPv6 bans containing it;
    a plain IPv4 address is never covered by an IPv6 ban."""
    bans = index("198.51.100.0/24")
    assert bans.lookup("::ffff:198.51.100.7").subject == "198.51.100.0/24"
    assert bans.lookup("::ffff:c633:6407").subject == "198.51.100.0/24"  # the same address, in hex
    assert bans.lookup("::ffff:198.51.101.7") is None
    assert bans.lookup("::198.51.100.7") is None  # IPv4-compatible (deprecated), not mapped
    bans = index("198.51.100.0/24", "::ffff:0:0/96", "::ffff:198.51.100.0/120", "::ffff:198.51.100.7/128")
    assert [e.subject for e in bans.matches("::ffff:198.51.100.7")] == [
        "::ffff:198.51.100.7/128", "::ffff:198.51.100.0/120", "198.51.100.0/24", "::ffff:0:0/96"]
    assert [e.subject for e in bans.matches("198.51.100.7")] == ["198.51.100.0/24"]


def test_removal_lifts_the_ban_and_forgets_unused_prefix_lengths():
    bans = index("10.0.0.0/8", "10.1.2.0/24")
    assert bans.remove("10.1.2.99/24").subject == "10.1.2.0/24"  # any spelling of the network
    assert bans.lookup("10.1.2.3").subject == "10.0.0.0/8"
    assert bans.remove("10.1.2.0/24") is None
    assert bans.remove("10.0.0.0/8") is not None
    assert bans.lookup("10.1.2.3") is None and len(bans) == 0 and not bans
    assert bans._probes == {4: (), 6: ()}


def test_the_memo_is_cleared_whenever_the_bans_change_and_is_bounded():
    bans = NetworkBans(memo_size=4)
    assert bans.lookup("192.0.2.1") is None  # memoised as a miss
    bans.put("192.0.2.0/24", ban("192.0.2.0/24"))
    assert bans.lookup("192.0.2.1").reason == "manual"
    bans.put("192.0.2.0/24", ban("192.0.2.0/24", reason="abuse"))  # replaced
    assert bans.lookup("192.0.2.1").reason == "abuse"
    bans.remove("192.0.2.0/24")
    assert bans.lookup("192.0.2.1") is None
    for i in range(10):
        bans.lookup(f"192.0.2.{i}")
    assert len(bans._memo) <= 4


@pytest.mark.parametrize("bad", ["", "banana", "10.0.0.0/33", "2001:db8::/129", "10.0.0.256/8", "fe80::/64%eth0",
                                 "10.0.0.0/8/8", "::1/-1"])
def test_a_bad_cidr_raises_value_error_naming_it(bad):
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 network") as caught:
        NetworkBans().put(bad, ban("10.0.0.0/8"))
    assert repr(bad) in str(caught.value)


def test_cidrs_are_normalised():
    assert normalize_cidr("198.51.100.77/24") == "198.51.100.0/24"
    assert normalize_cidr("2001:DB8:1:2:0:0:0:1/64") == "2001:db8:1:2::/64"
    assert normalize_cidr("203.0.113.9") == "203.0.113.9/32"
    assert index("198.51.100.77/24").items()[0][0] == "198.51.100.0/24"


@pytest.mark.parametrize("ip", ["", "banana", "10.0.0", "10.0.0.256", "fe80::1%eth0", "1.2.3.4\x00", ":::"])
def test_an_unparsable_address_is_in_no_network(ip):
    assert index("0.0.0.0/0", "::/0").lookup(ip) is None


# -- the Blocklist the limiter asks once per event


def blocklist(*entries: tuple[str, str, BlocklistEntry | None]) -> Blocklist:
    book = Blocklist()
    for kind, subject, entry in entries:
        book.put(kind, subject, entry)
    return book


def test_a_network_ban_blocks_by_event_time_like_ip_and_user_bans():
    book = blocklist(("network", "2001:db8:1:2::/64", ban("2001:db8:1:2::/64", start=100.0, ttl=50.0)))
    assert book.reason("alice", "2001:db8:1:2::7", 99.9) is None
    assert book.reason("alice", "2001:db8:1:2::7", 100.0) == "network_blocked"
    assert book.reason("alice", "2001:db8:1:2::7", 149.9) == "network_blocked"
    assert book.reason("alice", "2001:db8:1:2::7", 150.0) is None
    assert book.reason("alice", "2001:db8:1:3::7", 120.0) is None


def test_an_inactive_specific_ban_does_not_hide_an_active_wider_one():
    book = blocklist(("network", "10.0.0.0/8", ban("10.0.0.0/8")),
                     ("network", "10.1.2.0/24", ban("10.1.2.0/24", start=500.0)))
    assert book.reason("u", "10.1.2.3", 10.0) == "network_blocked"


def test_the_exact_ip_comes_first_then_the_network_then_the_user():
    book = blocklist(("ip", "10.1.2.3", ban("10.1.2.3", kind="ip")), ("network", "10.1.2.0/24", ban("10.1.2.0/24")),
                     ("user", "mallory", ban("mallory", kind="user")))
    assert book.reason("mallory", "10.1.2.3", 1.0) == "ip_blocked"
    assert book.reason("mallory", "10.1.2.4", 1.0) == "network_blocked"
    assert book.reason("mallory", "10.1.3.4", 1.0) == "user_blocked"
    assert len(book) == 3 and {e.kind for e in book.entries()} == {"ip", "network", "user"}


def test_a_tombstone_lifts_a_network_ban():
    book = blocklist(("network", "198.51.100.0/24", ban("198.51.100.0/24")))
    assert book.reason("u", "198.51.100.9", 1.0) == "network_blocked"
    book.put("network", "198.51.100.0/24", None)
    assert book.reason("u", "198.51.100.9", 1.0) is None and len(book) == 0
    book.put("network", "198.51.100.0/24", None)  # again: nothing to lift


def test_two_spellings_of_one_network_are_one_ban_until_both_are_gone():
    book = blocklist(("network", "198.51.100.0/24", ban("198.51.100.0/24")),
                     ("network", "198.51.100.9/24", ban("198.51.100.9/24")))
    book.put("network", "198.51.100.9/24", None)
    assert book.reason("u", "198.51.100.9", 1.0) == "network_blocked"
    book.put("network", "198.51.100.0/24", None)
    assert book.reason("u", "198.51.100.9", 1.0) is None


def test_a_network_entry_that_is_no_cidr_is_counted_logged_and_skipped(caplog):
    book = Blocklist()
    with caplog.at_level(logging.WARNING, logger="agents.rules"):
        book.put("network", "10.0.0.0/99", ban("10.0.0.0/99"))
    assert book.rejected == 1 and len(book) == 0 and "10.0.0.0/99" in caplog.text
    assert book.reason("u", "10.0.0.1", 1.0) is None
    book.put("network", "10.0.0.0/99", None)  # its tombstone is harmless


def test_no_network_ban_means_no_network_lookup():
    book = blocklist(("ip", "10.1.2.3", ban("10.1.2.3", kind="ip")))
    book._network_matches = None  # would raise if called
    assert book.reason("u", "10.9.9.9", 1.0) is None


# -- the gateway's admin routes (no Kafka: tests/unit/gateway_fakes.py applies writes at once)


@pytest.fixture()
def api():
    from tests.unit.gateway_fakes import api_client

    yield from api_client()


def test_the_gateway_bans_lists_and_lifts_a_network(api):
    admin = api.key_for("admin")
    put = api.put("/blocklist/networks/2001:DB8:1:2::77/64", json={"reason": "botnet", "ttl": 600}, headers=admin)
    assert put.status_code == 200, put.text
    assert put.json() | {"start": 0} == {"subject": "2001:db8:1:2::/64", "kind": "network", "reason": "botnet",
                                         "start": 0, "ttl": 600.0, "expires_at": put.json()["start"] + 600.0}
    assert api.put("/blocklist/networks/198.51.100.0/24", json={}, headers=admin).status_code == 200
    listed = api.get("/blocklist", headers=api.key_for("analyst")).json()["entries"]
    assert [(e["kind"], e["subject"]) for e in listed] == [("network", "198.51.100.0/24"), ("network", "2001:db8:1:2::/64")]
    assert api.gateway.blocklist.reason("u", "2001:db8:1:2::9", put.json()["start"] + 1) == "network_blocked"
    assert api.delete("/blocklist/networks/198.51.100.99/24", headers=admin).status_code == 204  # any spelling
    assert api.delete("/blocklist/networks/198.51.100.0/24", headers=admin).status_code == 404
    assert [e["subject"] for e in api.get("/blocklist", headers=admin).json()["entries"]] == ["2001:db8:1:2::/64"]


@pytest.mark.parametrize("path", ["/blocklist/networks/198.51.100.0/33", "/blocklist/networks/banana/24",
                                  "/blocklist/networks/2001:db8::/129", "/blocklist/networks/10.0.0.0/x",
                                  "/blocklist/networks/10.0.0.0/-1"])
def test_a_bad_network_is_a_422_with_a_message(api, path):
    answer = api.put(path, json={}, headers=api.key_for("admin"))
    assert answer.status_code == 422 and answer.json()["detail"][0]["msg"]
    assert api.delete(path, headers=api.key_for("admin")).status_code == 422


def test_network_routes_are_admin_only_and_in_the_openapi_document(api):
    for role in ("client", "service", "analyst"):
        assert api.put("/blocklist/networks/10.0.0.0/8", json={}, headers=api.key_for(role)).status_code == 403
        assert api.delete("/blocklist/networks/10.0.0.0/8", headers=api.key_for(role)).status_code == 403
    assert api.put("/blocklist/networks/10.0.0.0/8", json={}).status_code == 401
    document = api.get("/openapi.json").json()
    operations = document["paths"]["/blocklist/networks/{address}/{prefix}"]
    assert set(operations) == {"put", "delete"}
    params = {p["name"]: p for p in operations["put"]["parameters"]}
    assert params["prefix"]["schema"]["type"] == "integer" and params["address"]["in"] == "path"
    assert "422" in operations["put"]["responses"] and "404" in operations["delete"]["responses"]
    assert "network" in document["components"]["schemas"]["BlockEntry"]["properties"]["kind"]["enum"]


# -- the CLI's choice of kind


@pytest.mark.parametrize("argv, expected", [
    (["blocklist", "add", "198.51.100.7/24"], ("network", "198.51.100.0/24")),
    (["blocklist", "remove", "2001:DB8:1:2::/64"], ("network", "2001:db8:1:2::/64")),
    (["blocklist", "add", "203.0.113.9", "--kind", "network"], ("network", "203.0.113.9/32")),
    (["blocklist", "add", "203.0.113.9"], ("ip", "203.0.113.9")),
    (["blocklist", "add", "mallory", "--user"], ("user", "mallory")),
])
def test_the_cli_tells_a_network_from_its_subject_or_kind(argv, expected):
    from ratewarden.cli import build_parser
    from ratewarden.control_cli import blocklist_kind

    assert blocklist_kind(build_parser().parse_args(argv)) == expected


def test_the_cli_refuses_a_bad_cidr_with_exit_status_2(capsys):
    from ratewarden.cli import main

    assert main(["blocklist", "add", "198.51.100.0/33"]) == 2
    assert "'198.51.100.0/33' is not an IPv4 or IPv6 network" in capsys.readouterr().out


def test_the_benchmark_bans_contain_exactly_the_chosen_users_addresses():
    """bench/limiter_bench.py --only ratewarden ratewarden-cidr relies on it to check the bans were enforced."""
    from bench.impls import CIDR_BANS, banned_users, cidr_bans
    from bench.workload import _ip

    networks = cidr_bans()
    assert len(set(networks)) == CIDR_BANS and networks == cidr_bans()  # distinct, deterministic
    bans = index(*networks)
    assert len({(n.version, n.prefixlen) for n in map(ipaddress.ip_network, networks)}) > 100  # varied lengths
    assert [u for u in range(1000) if bans.lookup(_ip(u)) is not None] == banned_users()
