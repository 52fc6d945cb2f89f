"""Flags -> bans, pure: start at the flag's window end, TTL growing per offence, allow-list, manual bans."""

import msgspec
import pytest

from agents.blocklist import BanBook, ban_ttl, next_ban
from agents.blocklist_entries import Blocklist
from schemas.flags import AutoBan, IpFeatures, IpFlag, Population
from schemas.limits import BlocklistEntry
from streams.settings import Settings

S = Settings(ban_ttl=300.0, ban_ttl_factor=4.0, ban_ttl_max=7_200.0, offence_memory=86_400.0)
T0 = 1_732_899_960.0


def flag(ip="203.0.113.9", end=T0 + 60, rules=("flood",), allowlisted=False) -> IpFlag:
    features = IpFeatures(700, 11.7, 1, 700.0, 0.0, "read", 1.0, 600, 0, 0.857, end - 59, end - 1)
    return IpFlag(ip, end - 60, end, 120.5, list(rules), allowlisted, features, {"z_requests": 120.5},
                  Population(300, 6.0, 3.0, 5.0, 2.0))


def test_first_ban_starts_at_the_window_end_with_the_base_ttl():
    ban = next_ban(None, flag(rules=("flood", "hammering")), S)
    assert (ban.subject, ban.kind, ban.start, ban.ttl, ban.offences) == ("203.0.113.9", "ip", T0 + 60, 300.0, 1)
    assert ban.reason == "auto:flood+hammering" and ban.rules == ["flood", "hammering"]


def test_no_new_offence_while_a_ban_runs_and_a_longer_one_after_it():
    first = next_ban(None, flag(end=T0 + 60), S)
    assert next_ban(first, flag(end=T0 + 120), S) is None  # still banned: the same offence
    assert next_ban(first, flag(end=T0 + 359), S) is None
    assert next_ban(first, flag(end=T0 + 360), S) is None  # its window [300, 360) lies inside the ban
    assert next_ban(first, flag(end=T0 + 420), S).offences == 2  # [360, 420): after the ban
    second = next_ban(first, flag(end=T0 + 1_000), S)
    assert (second.start, second.ttl, second.offences) == (T0 + 1_000, 1_200.0, 2)
    third = next_ban(second, flag(end=T0 + 5_000), S)
    assert (third.ttl, third.offences) == (4_800.0, 3)
    assert next_ban(third, flag(end=T0 + 20_000), S).ttl == 7_200.0  # capped at ban_ttl_max
    assert [ban_ttl(n, S) for n in (1, 2, 3, 4)] == [300.0, 1_200.0, 4_800.0, 7_200.0]


def test_old_offences_are_forgotten():
    first = next_ban(None, flag(end=T0 + 60), S)
    later = next_ban(first, flag(end=T0 + 60 + 300 + 86_400 + 1), S)
    assert later.offences == 1 and later.ttl == 300.0


def test_allowlisted_ips_are_never_banned():
    assert next_ban(None, flag(allowlisted=True), S) is None
    assert next_ban(None, flag(), S, allowlisted=True) is None


def test_a_manual_ban_is_never_shortened_and_counts_no_offence():
    forever = AutoBan(subject="203.0.113.9", reason="manual")
    assert next_ban(forever, flag(end=T0 + 10**6), S) is None
    expired = AutoBan(subject="203.0.113.9", reason="manual", start=T0 - 1_000, ttl=100)
    assert next_ban(expired, flag(), S).offences == 1


def test_the_limiter_reads_an_automatic_ban_as_a_plain_entry():
    ban = next_ban(None, flag(), S)
    entry = msgspec.json.decode(msgspec.json.encode(ban), type=BlocklistEntry)
    blocklist = Blocklist()
    blocklist.put("ip", entry.subject, entry)
    assert blocklist.reason("anyone", "203.0.113.9", T0 + 59.9) is None
    assert blocklist.reason("anyone", "203.0.113.9", T0 + 60) == "ip_blocked"
    assert blocklist.reason("anyone", "203.0.113.9", T0 + 359.9) == "ip_blocked"
    assert blocklist.reason("anyone", "203.0.113.9", T0 + 360) is None


def test_ban_book_keeps_its_own_write_until_the_topic_returns_it():
    book, encode = BanBook(), msgspec.json.encode
    first = next_ban(None, flag(end=T0 + 60), S)
    book.apply(b"ip:203.0.113.9", encode(first))
    second = next_ban(first, flag(end=T0 + 1_000), S)
    book.wrote(second, encode(second))
    book.apply(b"ip:203.0.113.9", encode(first))  # an older record read back late: ignored
    assert book.get("203.0.113.9") == second
    book.apply(b"ip:203.0.113.9", encode(second))  # our write is back: the topic leads again
    book.apply(b"ip:203.0.113.9", None)  # e.g. `ratewarden blocklist remove`
    assert book.get("203.0.113.9") is None
    book.apply(b"user:alice", encode(BlocklistEntry(subject="alice", kind="user")))
    manual = encode(BlocklistEntry(subject="198.51.100.1", reason="manual"))
    book.apply(b"ip:198.51.100.1", manual)
    # user entries are kept too (a TTL ban of a user expires like an IP's), but get() is by IP
    assert len(book) == 2 and book.get("alice") is None and book.get("198.51.100.1").offences == 0


def test_ban_book_ignores_every_read_back_until_its_last_write_returns():
    """A ban and its tombstone, twice, all written before any reads back: reading back the first
    tombstone must not let the second ban revive (the expiry scan would tombstone it again and record
    the older ban as the IP's last offence)."""
    book, encode, key = BanBook(), msgspec.json.encode, b"ip:203.0.113.9"
    changes = []
    book.on_change = lambda: changes.append(book.get("203.0.113.9"))
    first = next_ban(None, flag(end=T0 + 60), S)
    second = next_ban(first, flag(end=T0 + 1_000), S)
    writes = [encode(first), None, encode(second), None]
    for value in writes:
        if value is None:
            book.deleted(key.decode())
        else:
            book.wrote(msgspec.json.decode(value, type=type(first)), value)
    for value in writes:  # the topic returns them in order
        book.apply(key, value)
        assert book.get("203.0.113.9") is None
    assert changes == []  # none of them was someone else's
    book.apply(key, encode(first))  # a record after our writes (another writer): applied
    assert book.get("203.0.113.9") == first and changes == [first]


@pytest.mark.parametrize("offences", [1, 2, 5])
def test_ttl_grows_monotonically(offences):
    assert ban_ttl(offences + 1, S) >= ban_ttl(offences, S)


def graded(severity: str, kind: str = "ip", ip: str = "203.0.113.9", end: float = T0 + 60) -> IpFlag:
    return msgspec.structs.replace(flag(ip=ip, end=end), severity=severity, kind=kind)


def test_a_low_severity_first_offence_is_reported_only_or_a_short_ban_and_a_repeat_escalates():
    assert next_ban(None, graded("low"), S) is None  # default: reported, not banned
    short_settings = S.model_copy(update={"ban_low_severity": "short", "ban_short_ttl": 45.0})
    short = next_ban(None, graded("low"), short_settings)
    assert (short.ttl, short.offences, short.severity) == (45.0, 1, "low")
    earlier = next_ban(None, graded("high"), S)  # an offence in memory: a low flag after it escalates
    again = next_ban(earlier, graded("low", end=T0 + 1_000), S)
    assert (again.offences, again.ttl) == (2, 1_200.0)
    assert next_ban(None, graded("medium"), S).ttl == 300.0


def test_a_network_flag_bans_the_network():
    ban = next_ban(None, graded("high", kind="network", ip="2a01:4f8:1:2::/64"), S)
    assert (ban.kind, ban.subject) == ("network", "2a01:4f8:1:2::/64")
    book = Blocklist()
    book.put(ban.kind, ban.subject, ban)
    assert book.reason("u", "2a01:4f8:1:2::beef", ban.start + 1) == "network_blocked"
    assert book.reason("u", "2a01:4f8:1:3::beef", ban.start + 1) is None
