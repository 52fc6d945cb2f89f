"""Expiry of bans by event time, pure: which bans are tombstoned and when, and that tombstoning with the
offence memory decides every flag exactly as keeping every ban forever would (repeat offenders too)."""

import random

import msgspec

from agents.ban_expiry import BanClock, expired, forgotten, owner
from agents.ban_warden import previous_ban
from agents.blocklist import BanBook, ban_end, next_ban
from schemas.flags import AutoBan, IpFeatures, IpFlag, Population
from schemas.limits import BlocklistEntry
from streams.settings import Settings

S = Settings(ban_ttl=300.0, ban_ttl_factor=4.0, ban_ttl_max=7_200.0, offence_memory=3_000.0)
T0 = 1_732_899_960.0
N = 4
encode = msgspec.json.encode


def flag(ip: str, end: float) -> IpFlag:
    features = IpFeatures(700, 11.7, 1, 700.0, 0.0, "read", 1.0, 600, 0, 0.857, end - 59, end - 1)
    return IpFlag(ip, end - 60, end, 99.0, ["flood"], False, features, {"z_requests": 99.0},
                  Population(300, 6.0, 3.0, 5.0, 2.0))


def entry(subject: str, start: float, ttl: float | None, kind: str = "ip") -> AutoBan:
    return AutoBan(subject=subject, kind=kind, reason="manual", start=start, ttl=ttl)


def test_the_clock_of_a_partition_only_moves_forward():
    clock = BanClock()
    assert clock.advance(1, T0) and not clock.advance(1, T0 - 60) and not clock.advance(1, T0)
    assert clock.at(1) == T0 and clock.at(2) == float("-inf")


def test_a_ban_expires_when_its_own_partitions_time_reaches_its_end():
    ip = "203.0.113.9"
    key, p = f"ip:{ip}", owner(f"ip:{ip}", N)
    other = (p + 1) % N
    entries = {key: entry(ip, T0, 300.0), "ip:198.51.100.1": entry("198.51.100.1", T0, None)}
    clock = BanClock()
    clock.advance(other, T0 + 10_000)  # another partition far ahead: not this ban's time
    clock.advance(p, T0 + 299)
    assert expired(entries, clock, N, range(N)) == []
    clock.advance(p, T0 + 300)  # end <= time: no flag to come can start inside it
    assert expired(entries, clock, N, range(N)) == [key]
    assert expired(entries, clock, N, [other]) == []  # only the owner of the partition tombstones it
    for q in range(N):  # a ban without TTL never expires
        clock.advance(q, T0 + 1e9)
    assert expired(entries, clock, N, range(N)) == [key]


def test_manual_user_bans_with_a_ttl_expire_too():
    entries = {"user:alice": entry("alice", T0, 60.0, kind="user"), "user:bob": entry("bob", T0, None, kind="user")}
    clock = BanClock()
    clock.advance(owner("user:alice", N), T0 + 60)
    assert expired(entries, clock, N, range(N)) == ["user:alice"]


def test_an_offence_is_forgotten_only_after_offence_memory():
    ban = next_ban(None, flag("203.0.113.9", T0 + 60), S)
    memory = {"ip:203.0.113.9": ban}
    clock, p = BanClock(), owner("ip:203.0.113.9", N)
    clock.advance(p, ban_end(ban) + S.offence_memory)
    assert forgotten(memory, clock, N, range(N), S.offence_memory) == []
    clock.advance(p, ban_end(ban) + S.offence_memory + 60)
    assert forgotten(memory, clock, N, range(N), S.offence_memory) == ["ip:203.0.113.9"]
    assert forgotten(memory, clock, N, [], S.offence_memory) == []


def test_a_tombstoned_ban_still_counts_for_the_repeat_offence():
    ip, key = "203.0.113.9", "ip:203.0.113.9"
    book, memory, clock = BanBook(), BanBook(), BanClock()
    first = next_ban(None, flag(ip, T0 + 60), S)
    book.wrote(first, encode(first))
    memory.wrote(first, encode(first))
    clock.advance(owner(key, N), T0 + 1_000)
    assert expired(book.items(), clock, N, range(N)) == [key]
    book.deleted(key)
    book.apply(key.encode(), encode(first))  # the ban read back before the tombstone: ignored
    assert book.get(ip) is None
    book.apply(key.encode(), None)  # the tombstone is back
    assert book.get(ip) is None and len(book) == 0
    second = next_ban(previous_ban(book, memory, ip), flag(ip, T0 + 1_060), S)
    assert (second.offences, second.ttl) == (2, 1_200.0)
    book.apply(key.encode(), encode(second))  # someone else's record after our tombstone applies again
    assert book.get(ip) == second


def test_a_running_manual_ban_comes_before_the_remembered_one():
    ip = "203.0.113.9"
    book, memory = BanBook(), BanBook()
    remembered = next_ban(None, flag(ip, T0 + 60), S)
    memory.wrote(remembered, encode(remembered))
    book.apply(f"ip:{ip}".encode(), encode(BlocklistEntry(subject=ip, start=T0 + 500, ttl=None)))
    assert previous_ban(book, memory, ip).reason == "manual"
    assert next_ban(previous_ban(book, memory, ip), flag(ip, T0 + 5_000), S) is None  # banned forever by hand


def decide_all(flags: list[IpFlag], tombstones: bool):
    """The agent's decisions over ``flags`` (in window order), with or without expiry."""
    book, memory, clock = BanBook(), BanBook(), BanClock()
    bans, removed, forgot = [], 0, 0
    for f in flags:
        previous = previous_ban(book, memory, f.ip) if tombstones else book.get(f.ip)
        ban = next_ban(previous, f, S)
        if ban is not None:
            bans.append(ban)
            book.wrote(ban, encode(ban))
            memory.wrote(ban, encode(ban))
        clock.advance(owner(f"ip:{f.ip}", N), f.window_start)
        if tombstones:
            for key in expired(book.items(), clock, N, range(N)):
                book.deleted(key)
                removed += 1
            for key in forgotten(memory.items(), clock, N, range(N), S.offence_memory):
                memory.deleted(key)
                forgot += 1
    return bans, book, clock, removed, forgot


def test_tombstoning_expired_bans_changes_no_decision_and_leaves_only_active_bans():
    rng = random.Random(16)
    ips = [f"203.0.113.{i}" for i in range(12)]
    for _ in range(30):
        ends = sorted({T0 + 60 * rng.randrange(1, 400) for _ in range(80)})
        flags = [flag(rng.choice(ips), end) for end in ends for _ in range(rng.choice((1, 1, 2)))]
        kept, _, _, _, _ = decide_all(flags, tombstones=False)
        bans, book, clock, removed, forgot = decide_all(flags, tombstones=True)
        assert bans == kept
        assert removed > 0 and forgot > 0  # the scenario really expires bans and forgets offences
        assert any(b.offences >= 2 for b in bans)  # and has repeat offenders
        latest = {}
        for ban in bans:
            latest[f"ip:{ban.subject}"] = ban
        active = {k for k, b in latest.items() if ban_end(b) > clock.at(owner(k, N))}
        assert set(book.items()) == active
