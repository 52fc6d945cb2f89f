"""The console's pure pieces: decisions counted per second (``pulse``), flags grouped per subject, times."""

import msgspec
import pytest

from ratewarden.gateway.console.access import Refused
from ratewarden.gateway.console.pages import parse_time
from ratewarden.gateway.console.parts import flags_per_rule
from ratewarden.gateway.console.pulse import PulseCounts
from ratewarden.gateway.console.sources import group_flags, select_flags
from schemas.flags import IpFeatures, IpFlag, Population

T = 1_800_000_000


def test_decisions_are_counted_per_second_and_verdict():
    counts = PulseCounts(seconds=60)
    for ts, verdict in ((T + 0.1, "allow"), (T + 0.9, "allow"), (T + 1.5, "throttle"), (T + 2.2, "block")):
        counts.add(verdict, "u", ts)
    counts.add("maybe", "u", T)
    series = counts.series(T + 3, span=4)
    assert series == {"t": [T - 1, T, T + 1, T + 2], "allow": [0, 2, 0, 0], "throttle": [0, 0, 1, 0],
                      "block": [0, 0, 0, 1]}
    assert (counts.total, counts.by_verdict, counts.unknown) == (4, {"allow": 2, "throttle": 1, "block": 1}, 1)
    assert counts.rates(T + 3, span=2) == {"allow": 0.0, "throttle": 0.5, "block": 0.5}
    assert counts.shares(T + 3, span=3) == {"throttle": 0.25, "block": 0.25}
    assert counts.shares(T + 100, span=3) == {"throttle": None, "block": None}


def test_the_ring_forgets_a_second_an_hour_old_and_ignores_older_decisions():
    counts = PulseCounts(seconds=10)
    counts.add("allow", "u", T)
    counts.add("allow", "u", T + 10)  # the same slot, a newer second: the old count goes
    counts.add("allow", "u", T)  # older than the ring now holds: in the totals only
    assert counts.count("allow", T + 10) == 1 and counts.count("allow", T) == 0
    assert (counts.total, counts.late) == (3, 1)
    assert counts.series(T + 11, span=1000)["t"] == list(range(T + 1, T + 11))  # at most the ring


def test_users_refused_most_are_bounded_and_cover_the_last_hour():
    counts = PulseCounts(max_users=2)
    for user, n in (("a", 3), ("b", 1), ("c", 5)):
        for _ in range(n):
            counts.add("throttle", user, T)
    counts.add("block", "b", T + 61)
    counts.add("allow", "a", T + 62)
    assert counts.top_refused(T + 62) == [("a", 3), ("b", 2)]
    assert counts.untracked_users == 5  # c came when the minute's tally was full
    assert counts.top_refused(T + 3_600 + 59) == [("b", 1)]  # the first minute is an hour old


def flag(ip: str, start: float, score: float, rules: list[str], severity: str = "high", kind: str = "ip") -> IpFlag:
    features = IpFeatures(requests=100, rate=1.0, users=3, requests_per_user=33.3, login_share=0.9, top_type="login",
                          top_type_share=0.9, throttled=1, blocked=0, refused_share=0.01, first_seen=start,
                          last_seen=start + 50)
    return IpFlag(ip, start, start + 60, score, rules, False, features, {"z_requests": score},
                  Population(10, 5.0, 1.0, 2.0, 1.0), kind, severity)


def test_flags_are_grouped_per_subject_with_the_strongest_score_and_every_rule():
    flags = [flag("192.0.2.1", T, 7.0, ["flood"], "medium"), flag("192.0.2.1", T + 60, 9.0, ["scraper"], "high"),
             flag("2001:db8::/64", T + 60, 8.0, ["flood"], "low", "network")]
    grouped = group_flags(flags)
    assert [(g.subject, g.score, g.severity, g.rules, g.last_window) for g in grouped] == [
        ("192.0.2.1", 9.0, "high", ["scraper", "flood"], T + 60), ("2001:db8::/64", 8.0, "low", ["flood"], T + 60)]
    assert grouped[0].strongest.score == 9.0
    assert select_flags(flags, rule="flood") == [flags[0], flags[2]]
    assert select_flags(flags, severity="high") == [flags[1]]
    assert select_flags(flags, since=T + 1, until=T + 61) == flags[1:]
    assert flags_per_rule(flags) == {"t": [T, T + 60], "flood": [1, 1], "scraper": [0, 1]}
    assert msgspec.json.decode(msgspec.json.encode(flags[0]), type=IpFlag) == flags[0]


def test_query_times_are_epoch_seconds_or_iso_8601_in_utc():
    assert parse_time("", "since") is None and parse_time(None, "since") is None
    assert parse_time("1800000000", "since") == 1_800_000_000.0
    assert parse_time("2027-01-15T08:00", "since") == 1_800_000_000.0
    assert parse_time("2027-01-15T09:00:00+01:00", "since") == 1_800_000_000.0
    with pytest.raises(Refused) as refused:
        parse_time("yesterday", "until")
    assert refused.value.status == 400 and "until" in refused.value.message
