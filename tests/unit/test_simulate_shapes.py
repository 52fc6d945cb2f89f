"""The simulator's evasion shapes and honest look-alikes: present, labelled, and shaped as documented."""

import ipaddress
import json
from collections import Counter, defaultdict

import msgspec
import pytest

from ratewarden.simulate import ALLOWLIST, Simulation, simulate, write_labels

MINUTES, USERS, SEED = 30, 2000, 7
STUFFING = ("credential_stuffing", "low_and_slow", "distributed_stuffing")


@pytest.fixture(scope="module")
def sim():
    return simulate(minutes=MINUTES, users=USERS, seed=SEED)


@pytest.fixture(scope="module")
def by_source(sim):
    """Events by attack source (an IP, or the labelled network for IPv6 rotation)."""
    networks = [(ipaddress.ip_network(s), s) for s, a in sim.labels["attackers"].items() if a.get("network")]
    out = defaultdict(list)
    for e in sim.events:
        if e.ip in sim.labels["attackers"]:
            out[e.ip].append(e)
        elif ":" in e.ip:
            address = ipaddress.ip_address(e.ip)
            for net, source in networks:
                if address in net:
                    out[source].append(e)
    return out


def honest(sim):
    """Events from no attack source."""
    rotation = [ipaddress.ip_network(s) for s, a in sim.labels["attackers"].items() if a.get("network")]
    return [e for e in sim.events if e.ip not in sim.labels["attackers"]
            and not (":" in e.ip and any(ipaddress.ip_address(e.ip) in n for n in rotation))]


def test_deterministic_per_seed_and_labelled(sim):
    assert isinstance(sim, Simulation)
    again = simulate(minutes=MINUTES, users=USERS, seed=SEED)
    assert again.events == sim.events and again.labels == sim.labels
    assert simulate(minutes=MINUTES, users=USERS, seed=SEED + 1).events != sim.events
    labels = sim.labels
    kinds = Counter(a["kind"] for a in labels["attackers"].values())
    assert kinds == {"flood": 2, "credential_stuffing": 3, "scraper": 2, "hammering": 1, "low_and_slow": 24,
                     "ipv6_rotation": 1, "account_rotation": 1, "distributed_stuffing": 30}
    assert {k: sorted(v) for k, v in labels["kinds"].items()} == {
        k: sorted(s for s, a in labels["attackers"].items() if a["kind"] == k) for k in kinds}
    crowds = Counter(c["kind"] for c in labels["crowds"].values())
    assert crowds == {"cgnat": 2, "retry_burst": 3, "flash_crowd": 1}
    assert not set(labels["crowds"]) & set(labels["attackers"])
    assert not set(labels["offices"]) & set(labels["attackers"])
    for source, attack in labels["attackers"].items():
        for a, b in attack["intervals"]:
            assert b - a >= 180
            assert (a - labels["start_ts"]) % 60 != 0

def test_labels_write_as_json(sim, tmp_path):
    write_labels(tmp_path / "l.json", sim.labels)
    assert json.loads((tmp_path / "l.json").read_text()) == sim.labels


def test_every_attack_source_starts_on_its_label_and_none_shares_honest_addresses(sim, by_source):
    attackers = sim.labels["attackers"]
    assert set(by_source) == set(attackers)
    for source, attack in attackers.items():
        first = min(e.ts for e in by_source[source])
        assert attack["start"] <= first < attack["start"] + 60, source
    attacking = {e.ip for events in by_source.values() for e in events}
    assert not attacking & {e.ip for e in honest(sim)}


def test_honest_ipv6_households_have_their_own_64_with_several_addresses(sim):
    rotation = next(s for s, a in sim.labels["attackers"].items() if a["kind"] == "ipv6_rotation")
    v6 = [e for e in honest(sim) if ":" in e.ip]
    users = {e.user_id for e in v6}
    non_office = USERS - sum(o["users"] for o in sim.labels["offices"].values())
    assert 0.10 * non_office < len(users) < 0.20 * non_office
    nets = defaultdict(set)
    for e in v6:
        address = ipaddress.ip_address(e.ip)
        assert address in ipaddress.ip_network("2000::/3") and address not in ipaddress.ip_network("2001:db8::/32")
        nets[ipaddress.ip_network(f"{e.ip}/64", strict=False).compressed].add(e.ip)
    assert rotation not in nets
    assert sum(len(ips) >= 2 for ips in nets.values()) > 10
    users_by_net = defaultdict(set)
    for e in v6:
        users_by_net[ipaddress.ip_network(f"{e.ip}/64", strict=False).compressed].add(e.user_id)
    assert max(len(u) for u in users_by_net.values()) <= 4  # a household at most


def test_ipv6_rotation_a_fresh_address_per_request_in_one_64_one_account(sim, by_source):
    (source,) = sim.labels["kinds"]["ipv6_rotation"]
    label = sim.labels["attackers"][source]
    assert label["network"] is True and label["per_minute"] == 600
    assert source == ipaddress.ip_network(source).compressed and source.endswith("/64")
    events = by_source[source]
    assert len({e.ip for e in events}) == len(events) > 1000
    assert len({e.user_id for e in events}) == 1
    assert all(ipaddress.ip_address(e.ip) in ipaddress.ip_network(source) for e in events)
    types = Counter(e.request_type for e in events)
    assert types["read"] > types["search"] > types["login"] > 0
    span = (events[-1].ts - events[0].ts) / 60
    assert 550 < len(events) / span < 650


def test_account_rotation_throwaway_accounts_about_one_request_each(sim, by_source):
    (ip,) = sim.labels["kinds"]["account_rotation"]
    events = by_source[ip]
    per_account = Counter(e.user_id for e in events)
    assert set(per_account.values()) <= {1, 2}
    assert 1.05 < len(events) / len(per_account) < 1.15
    elsewhere = {e.user_id for e in sim.events if e.ip != ip}
    assert not set(per_account) & elsewhere
    assert all(u.startswith("user-") and u[5:].isdigit() and len(u) in (12, 13) for u in per_account)
    types = Counter(e.request_type for e in events)
    assert types["login"] < 0.1 * len(events) and types["read"] > 0.4 * len(events)
    assert 220 < len(events) / ((events[-1].ts - events[0].ts) / 60) < 260


def test_distributed_stuffing_tries_honest_victims_from_many_addresses(sim, by_source):
    ips = sim.labels["kinds"]["distributed_stuffing"]
    victims = sim.labels["victims"]
    assert len(ips) == 30 and len(victims) == 40 == len(set(victims))
    honest_users = {e.user_id for e in honest(sim)}
    assert set(victims) <= honest_users
    tried = defaultdict(list)  # victim -> [(ts, ip)]
    for ip in ips:
        events = by_source[ip]
        logins = sum(e.request_type == "login" for e in events)
        assert 0.7 <= logins / len(events) <= 0.9
        assert {e.user_id for e in events} <= set(victims)
        per_minute = len(events) / ((events[-1].ts - events[0].ts) / 60)
        assert 3 < per_minute < 5.5
        for e in events:
            if e.request_type == "login":
                tried[e.user_id].append((e.ts, ip))
    for victim in victims:
        attempts = sorted(tried[victim])
        best = max(len({ip for ts, ip in attempts if start <= ts < start + 300}) for start, _ in attempts)
        assert best >= 5, victim
    start, end = (sim.labels["attackers"][ips[0]]["intervals"][0])
    active = {e.user_id for e in honest(sim) if start <= e.ts < end}
    assert set(victims) <= active


def test_cgnat_hundreds_of_ordinary_users_behind_one_address(sim):
    cgnat = {ip: c for ip, c in sim.labels["crowds"].items() if c["kind"] == "cgnat"}
    assert len(cgnat) == 2
    for ip, crowd in cgnat.items():
        events = [e for e in sim.events if e.ip == ip]
        users = {e.user_id for e in events}
        assert 250 <= crowd["users"] <= 350 and 0.9 * crowd["users"] <= len(users) <= crowd["users"]
        types = Counter(e.request_type for e in events)
        assert types["login"] < 0.2 * len(events)
        assert types["read"] > types["search"] > 0
        assert ip not in sim.labels["offices"] and not any(
            ipaddress.ip_address(ip) in ipaddress.ip_network(n) for n in ALLOWLIST)
    assert len({e.user_id for e in sim.events if e.user_id.startswith("user-0")}) > 1900


def test_flash_crowd_triples_the_honest_rate(sim):
    crowd = sim.labels["crowds"]["flash_crowd"]
    assert crowd["factor"] == 3 and crowd["start"] < crowd["end"] <= sim.labels["end_ts"]
    start, end = crowd["start"], crowd["end"]
    length = end - start
    ts = [e.ts for e in honest(sim)]
    inside = sum(start <= t < end for t in ts) / length
    before = sum(start - length <= t < start for t in ts) / length
    assert inside >= 2.5 * before


def test_retry_bursts_150_requests_within_30_seconds(sim):
    bursts = {ip: c for ip, c in sim.labels["crowds"].items() if c["kind"] == "retry_burst"}
    assert len(bursts) == 3
    for ip, crowd in bursts.items():
        mine = [e for e in sim.events if e.user_id == crowd["user"]]
        events = [e for e in mine if crowd["start"] <= e.ts <= crowd["start"] + 30]
        assert len(events) >= 150
        failed = [e for e in mine if e.status == 503]
        assert len(failed) == 100 and all(e in events for e in failed)
        assert len({e.request_type for e in failed}) == 1
        assert {e.ip for e in sim.events if e.user_id == crowd["user"]} == {ip}


def test_outcomes_every_event_has_a_status_and_none_without(sim):
    assert all(e.status is not None for e in sim.events)
    bare = simulate(minutes=MINUTES, users=USERS, seed=SEED, outcomes=False)
    assert all(e.status is None for e in bare.events)
    assert bare.events == [msgspec.structs.replace(e, status=None) for e in sim.events]
    assert bare.labels == sim.labels


def test_outcomes_stuffing_logins_fail_honest_ones_mostly_succeed(sim, by_source):
    kind_of = {s: a["kind"] for s, a in sim.labels["attackers"].items()}
    for kind in STUFFING:
        logins = [e.status for s in sim.labels["kinds"][kind] for e in by_source[s] if e.request_type == "login"]
        assert Counter(logins)[401] > 0.9 * len(logins), kind
    others = [e.status for s, k in kind_of.items() if k not in STUFFING for e in by_source[s]]
    assert set(others) == {200}
    retry = {ip for ip, c in sim.labels["crowds"].items() if c["kind"] == "retry_burst"}
    statuses = Counter((e.request_type == "login", e.status) for e in honest(sim) if e.ip not in retry)
    logins = statuses[True, 200] + statuses[True, 401]
    assert 0.9 < statuses[True, 200] / logins < 0.99
    rest = sum(n for (login, _), n in statuses.items() if not login)
    assert statuses[False, 200] / rest > 0.98
    assert {s for _, s in statuses} == {200, 401, 404, 500}


@pytest.mark.parametrize("minutes", [30, 45, 90])
def test_any_length_from_30_minutes_has_every_shape(minutes):
    short = simulate(minutes=minutes, users=500, seed=3)
    assert set(short.labels["kinds"]) == {"flood", "credential_stuffing", "scraper", "hammering", "low_and_slow",
                                          "ipv6_rotation", "account_rotation", "distributed_stuffing"}
    assert {c["kind"] for c in short.labels["crowds"].values()} == {"cgnat", "retry_burst", "flash_crowd"}
    ends = [b for a in short.labels["attackers"].values() for _, b in a["intervals"]]
    assert max(ends) <= short.labels["end_ts"] + 1e-6
