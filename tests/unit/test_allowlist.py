"""The allow-list, pure: static seed plus the topic's entries, what an address or a network matches,
the memo cleared on change, keys, and bad records on the topic logged and counted."""

import logging

import msgspec
import pytest

from agents.allowlist import MEMO_SIZE, Allowlist, allowlist_key, covers, parse_networks
from agents.control_tables import allowlist_table
from agents.detectors import is_allowlisted
from schemas.allowlist import AllowlistEntry
from streams.settings import Settings


def entry(cidr: str, **fields) -> AllowlistEntry:
    return AllowlistEntry(network=allowlist_key(cidr), **fields)


def test_keys_are_normalised_cidrs_and_addresses_their_host_networks():
    assert allowlist_key("198.51.100.7") == "198.51.100.7/32"
    assert allowlist_key("2001:db8::1") == "2001:db8::1/128"
    assert allowlist_key("192.0.2.77/24") == "192.0.2.0/24"
    assert allowlist_key(" 2001:DB8:1:2::9/64") == "2001:db8:1:2::/64"
    for bad in ("", "not-an-ip", "192.0.2.0/33", "2001:db8::/129", "fe80::1%eth0"):
        with pytest.raises(ValueError):
            allowlist_key(bad)


def test_addresses_inside_static_or_runtime_networks():
    allowed = Allowlist(["192.0.2.0/24", " 2001:db8::/32", ""])
    assert allowed.contains("192.0.2.77") and allowed.contains("2001:db8:5::1")
    assert not allowed.contains("192.0.3.1") and not allowed.contains("not-an-ip") and not allowed.contains("")
    allowed.put("203.0.113.9/32", entry("203.0.113.9", reason="office"))
    assert allowed.contains("203.0.113.9") and not allowed.contains("203.0.113.10")
    allowed.put("203.0.113.9/32", None)
    assert not allowed.contains("203.0.113.9")
    assert allowed.changes == 2


def test_a_network_is_allowlisted_when_it_overlaps_an_allowed_network():
    allowed = Allowlist(["192.0.2.0/24"])
    allowed.put("2001:db8:1:2::7/128", entry("2001:db8:1:2::7"))
    assert allowed.contains("192.0.2.0/28")  # inside
    assert allowed.contains("192.0.0.0/16")  # holds the allowed /24: a ban would block it
    assert allowed.contains("2001:db8:1:2::/64")  # holds an allowed address
    assert not allowed.contains("192.0.3.0/24") and not allowed.contains("2001:db8:1:3::/64")
    assert not Allowlist(["192.0.2.0/24"]).contains("::/0")  # families never mix
    assert allowed.contains("::/0") and not Allowlist(["2001:db8::/32"]).contains("0.0.0.0/0")


def test_is_allowlisted_keeps_its_callers_and_reads_a_live_allowlist():
    networks = parse_networks(["192.0.2.0/24", "2001:db8::/32"])
    assert is_allowlisted("192.0.2.77", networks) and not is_allowlisted("192.0.3.1", networks)
    assert not is_allowlisted("192.0.2.77", []) and not is_allowlisted("not-an-ip", networks)
    assert is_allowlisted("2001:db8:1:2::/64", networks)
    live = Allowlist()
    assert not is_allowlisted("198.51.100.7", live)
    live.put("198.51.100.0/24", entry("198.51.100.0/24"))
    assert is_allowlisted("198.51.100.7", live) and covers("198.51.100.7", live.networks())


def test_the_memo_forgets_on_change_and_stays_bounded():
    allowed = Allowlist()
    assert not allowed.contains("203.0.113.9")  # memoised False
    allowed.put("203.0.113.0/24", entry("203.0.113.0/24"))
    assert allowed.contains("203.0.113.9")  # the memo was cleared
    for i in range(MEMO_SIZE + 10):
        allowed.contains(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(allowed._memo) <= MEMO_SIZE


def test_static_and_runtime_entries_are_listed_apart():
    allowed = Allowlist(["192.0.2.0/24"])
    allowed.put("198.51.100.7/32", entry("198.51.100.7", reason="vpn", added_at=5.0, added_by="admin-1"))
    assert allowed.is_static("192.0.2.0/24") and not allowed.is_static("198.51.100.7/32")
    assert [e.network for e in allowed.static_entries()] == ["192.0.2.0/24"]
    assert allowed.entries() == [AllowlistEntry("198.51.100.7/32", "vpn", 5.0, "admin-1")]
    assert allowed.entry("198.51.100.7/32").added_by == "admin-1" and len(allowed) == 2
    allowed.put("192.0.2.0/24", None)  # a tombstone cannot remove the static seed
    assert allowed.contains("192.0.2.1")
    with pytest.raises(ValueError):
        Allowlist(["192.0.2.0/33"])


def test_the_table_applies_records_and_logs_and_counts_bad_ones(caplog):
    allowed = Allowlist()
    table = allowlist_table(Settings(), allowed)
    good = msgspec.json.encode(entry("198.51.100.0/24", reason="office"))
    with caplog.at_level(logging.WARNING):
        table._apply(b"198.51.100.0/24", good)
        table._apply(b"198.51.100.9/32", good)  # under another key
        table._apply(b"203.0.113.0/24", b"{not json")
        table._apply(b"203.0.113.0/24", b'{"network": "x"}')  # too short
        table._apply(None, good)  # no key
    assert allowed.contains("198.51.100.7") and [e.network for e in allowed.entries()] == ["198.51.100.0/24"]
    assert allowed.rejected == 4 and caplog.text.count("allow-list: skipping bad record") == 4
    table._apply(b"198.51.100.0/24", None)
    assert not allowed.contains("198.51.100.7")


def test_stage_two_detectors_mark_flags_with_the_live_allowlist():
    """``detect`` given the live object (as stage 2 is): a runtime entry marks the flood ``allowlisted``, and
    its removal un-marks the next window's."""
    from agents.detectors import base_frame, detect
    from tests.unit.test_detectors import SETTINGS, W0, W1, honest_population, ip_row

    rows = honest_population() + [ip_row("203.0.113.9", 700, throttled=600)]
    live = Allowlist(SETTINGS.allowlist)

    def flagged() -> bool:
        flags, _, _ = detect(base_frame(rows), W0, W1, SETTINGS.detectors, live)
        [flag] = [f for f in flags if f.ip == "203.0.113.9"]
        return flag.allowlisted

    assert not flagged()
    live.put("203.0.113.0/24", entry("203.0.113.0/24"))
    assert flagged()
    live.put("203.0.113.0/24", None)
    assert not flagged()
