"""Expired bans are tombstoned on the real broker: after a long simulated run with short bans, the
blocklist topic's live keys are exactly the bans active at the event time the ban agent reached, the
offence memory holds exactly the offences not yet forgotten, and repeat offenders still get longer bans
after their first ban was tombstoned."""

import time

import msgspec
import pytest

from agents.ban_horizon import is_horizon_key, is_mark
from agents.blocklist import ban_end, next_ban
from agents.detectors import is_allowlisted, parse_networks
from ratewarden.control import block
from ratewarden.simulate import simulate
from schemas.flags import AbuseReport, AutoBan, IpFlag
from schemas.limits import BlocklistEntry
from streams.tables import blocklist_key

pytestmark = pytest.mark.kafka

OFFENCE_MEMORY = 300.0
STALL = 180.0


def fold(records) -> dict[bytes, bytes]:
    """A compacted topic as its consumers see it: last value per key wins, a tombstone deletes."""
    live: dict[bytes, bytes] = {}
    for r in records:
        if r.value is None:
            live.pop(r.key, None)
        else:
            live[r.key] = r.value
    return live


def snapshot(pipeline):
    """(event time the agent reached, flags, blocklist records, offence-memory records), read in that order."""
    s = pipeline.settings
    reports = [msgspec.json.decode(r.value, type=AbuseReport) for r in pipeline.read_topic(s.abuse_reports_topic)]
    reached = max((r.window_start for r in reports), default=float("-inf"))
    flags = [r for r in pipeline.read_topic(s.ip_flags_topic) if r.value is not None and not is_mark(r.value)]
    bans = [r for r in pipeline.read_topic(s.blocklist_topic) if not is_horizon_key(r.key.decode())]
    return reached, flags, bans, pipeline.read_topic(s.ban_offences_topic)


def shape(entry: BlocklistEntry) -> tuple:
    return entry.kind, entry.subject, entry.reason, entry.start, entry.ttl, getattr(entry, "offences", 0)


def reference(settings, manual: list[BlocklistEntry], flag_records) -> tuple[dict, dict, dict]:
    """Every flag decided against the IP's latest entry, nothing ever removed (the behaviour before
    tombstones): (latest entry per key, latest automatic ban per key, the latest flag's window start
    on the key's partition). Flags of one IP share a partition."""
    latest = {blocklist_key(e.kind, e.subject).encode(): e for e in manual}
    auto, partition_of, flags_time = {}, {}, {}
    networks = parse_networks(settings.allowlist)
    for r in sorted(flag_records, key=lambda r: (r.partition, r.offset)):
        f = msgspec.json.decode(r.value, type=IpFlag)
        key = blocklist_key("ip", f.ip).encode()
        partition_of[key] = r.partition
        flags_time[r.partition] = max(flags_time.get(r.partition, f.window_start), f.window_start)
        ban = next_ban(latest.get(key), f, settings, is_allowlisted(f.ip, networks))
        if ban is not None:
            latest[key] = auto[key] = ban
    return latest, auto, {key: flags_time[p] for key, p in partition_of.items()}


def test_live_blocklist_keys_equal_the_active_bans_after_a_long_run(make_pipeline):
    sim = simulate(minutes=40, users=200, seed=11)
    start, end = sim.labels["start_ts"], sim.labels["end_ts"]
    pipeline = make_pipeline(default_limit=100, ban_ttl=120.0, ban_ttl_factor=2.0, ban_ttl_max=900.0,
                             offence_memory=OFFENCE_MEMORY, allowlist_cidrs=",".join(sim.labels["allowlist"]))
    manual = [
        BlocklistEntry(subject="198.51.100.7", reason="manual", start=start, ttl=300.0),  # ends early in the run
        BlocklistEntry(subject="198.51.100.8", reason="manual", start=start),  # forever
        BlocklistEntry(subject="198.51.100.9", reason="manual", start=end - 60, ttl=3_600.0),  # outlives the run
        BlocklistEntry(subject="mallory", kind="user", reason="manual", start=start, ttl=600.0),
    ]
    for entry in manual:
        block(entry, pipeline.settings)
    pipeline.start_worker()
    pipeline.replay(sim.events, timeout=240)

    # Wait for the agent to settle: bounded by a stall (nothing new on any of the four topics for
    # STALL seconds), not by a wall-clock deadline, so a loaded machine only makes it slower.
    before, progress, stalled_since = None, None, time.monotonic()
    while True:
        reached, flags, bans, memory = snapshot(pipeline)
        latest, auto, flags_time = reference(pipeline.settings, manual, flags)
        want = {k: e for k, e in latest.items() if ban_end(e) > reached}  # active, or starting later
        # offences are forgotten by the flags' own event time (see agents/ban_warden.py)
        want_memory = {k for k, e in auto.items() if flags_time[k] - ban_end(e) <= OFFENCE_MEMORY}
        live = {k: msgspec.json.decode(v, type=AutoBan) for k, v in fold(bans).items()}
        remembered = set(fold(memory))
        settled = reached == before and reached >= end - 5 * 60  # the last window of the trace is in
        if settled and set(live) == set(want) and remembered == want_memory:
            break
        before, now = reached, (reached, len(flags), len(bans), len(memory))
        if now != progress:
            progress, stalled_since = now, time.monotonic()
        assert all(w.poll() is None for w in pipeline.workers), f"a worker died: see {pipeline.tmp_path}/*.log"
        assert time.monotonic() - stalled_since < STALL, (
            f"nothing new for {STALL:.0f} s at {reached - start:.0f} s: live - active {set(live) - set(want)}, "
            f"active - live {set(want) - set(live)}; remembered - expected {remembered - want_memory}, "
            f"expected - remembered {want_memory - remembered}; differing bans: "
            f"{[(k, live.get(k), latest.get(k)) for k in set(live) ^ set(want)][:3]}; differing memory: "
            f"{[(k, auto.get(k), flags_time.get(k), [(r.offset, r.value) for r in memory if r.key == k]) for k in remembered ^ want_memory][:3]}"
        )
        time.sleep(1)
    assert {k: shape(e) for k, e in live.items()} == {k: shape(e) for k, e in want.items()}  # the same entries

    tombstones = [r.key for r in bans if r.value is None]
    assert len(tombstones) >= 20 and len(auto) >= 20, (len(tombstones), len(auto))
    assert b"ip:198.51.100.7" in tombstones and b"user:mallory" in tombstones  # manual TTL bans expire too
    assert {b"ip:198.51.100.8", b"ip:198.51.100.9"} <= set(live)  # no TTL, or not over yet: kept
    assert len(fold(bans)) < len({r.key for r in bans})  # the topic no longer only grows

    # A repeat offender: banned again after its previous ban was tombstoned, with a longer ban.
    seen_tombstone, repeats = set(), []
    for r in bans:
        if r.value is None:
            seen_tombstone.add(r.key)
        elif r.key in seen_tombstone:
            ban = msgspec.json.decode(r.value, type=AutoBan)
            if ban.offences:
                repeats.append(ban)
    assert any(b.offences >= 2 and b.ttl > 120.0 for b in repeats), repeats
    # The offence memory forgets too: some banned IP's last ban ended more than offence_memory ago.
    assert len({r.key for r in memory}) > len(fold(memory)), "no offence was forgotten"
