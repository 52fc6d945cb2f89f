"""The ban horizon, pure: stage 2's marks -> the blocklist agent's horizons -> the limiter's gate."""

import math

import msgspec
import pytest

from agents.ban_gate import BanGate
from agents.ban_horizon import FlagsProgress, is_horizon_key, is_mark, only_flags
from agents.blocklist import next_ban
from agents.window_merger import WindowMerger
from schemas.flags import BanHorizon, FeaturesWatermark, FlagsWatermark
from streams.settings import Settings
from tests.unit.test_ban_expiry import flag

W, D = 60.0, 20.0
IP = "203.0.113.9"


def gate(partitions=2, timing="event_time", wait=5.0) -> BanGate:
    return BanGate(timing, D, W, 5.0, partitions, wait)


def horizon(partition: int, closed_until: float) -> bytes:
    return msgspec.json.encode(BanHorizon(partition=partition, closed_until=closed_until))


def test_arrival_timing_never_gates():
    g = gate(timing="arrival")
    assert g.until(0) == math.inf and g.until(0, 1e9) == math.inf


def test_delay_must_exceed_the_grace():
    with pytest.raises(ValueError, match="must exceed RATEWARDEN_ANALYTICS_GRACE"):
        BanGate("event_time", 5.0, W, 5.0, 2, 5.0)


def test_bootstrap_bounds_each_partition_by_its_own_first_window():
    g = gate()
    assert g.until(0) == -math.inf  # nothing known: the first event starts the bootstrap
    assert g.until(0, 1_000_030.0) == 1_000_020.0 + W + D  # first window starts at 1_000_020 (multiple of 60)
    assert g.until(0) == 1_000_020.0 + W + D
    assert g.until(1, 1_000_100.0) == 1_000_080.0 + W + D


def test_the_least_horizon_over_every_partition_governs_once_all_have_one():
    g = gate()
    g.until(0, 1_000_030.0)
    g.put(horizon(0, 1_000_200.0))
    assert g.horizon is None and g.until(0) == 1_000_020.0 + W + D  # one partition is not a horizon
    g.put(horizon(1, 1_000_140.0))
    assert g.horizon == 1_000_140.0 and g.until(0) == 1_000_140.0 + W + D
    g.put(horizon(1, 1_000_080.0))  # horizons never move back
    g.put(None)
    assert g.horizon == 1_000_140.0


def test_a_timed_out_wait_opens_the_gate_until_the_horizon_passes_what_was_decided():
    g = gate()
    g.put(horizon(0, 600.0))
    g.put(horizon(1, 600.0))
    assert g.until(0) == 600.0 + W + D
    g.give_up(0, 700.0)
    assert g.degraded and g.until(0) == math.inf
    g.ungated(900.0, 10)  # decided up to 900 without the gate
    assert g.stats == {"waits": 0, "timeouts": 1, "ungated": 10}
    g.put(horizon(0, 780.0))
    g.put(horizon(1, 780.0))
    assert g.until(0) == math.inf  # 780 + 80 does not pass 900 yet
    g.put(horizon(0, 840.0))
    g.put(horizon(1, 840.0))
    assert g.until(0) == 840.0 + W + D and not g.degraded


def test_flags_progress_publishes_the_least_source_mark_once_every_source_spoke():
    progress = FlagsProgress(sources=2)
    assert progress.advance(3, FlagsWatermark(source=0, closed_until=120.0)) is None
    assert progress.advance(3, FlagsWatermark(source=1, closed_until=180.0)) == BanHorizon(3, 120.0)
    assert progress.advance(3, FlagsWatermark(source=1, closed_until=240.0)) is None  # the least did not move
    assert progress.advance(3, FlagsWatermark(source=0, closed_until=60.0)) is None  # nor back
    assert progress.advance(3, FlagsWatermark(source=0, closed_until=300.0)) == BanHorizon(3, 240.0)
    assert progress.covers(3, 240.0) and not progress.covers(3, 300.0) and not progress.covers(2, 0.0)


def test_merger_closed_until_waits_for_unheard_sources_and_leaves_silent_ones_out():
    merger = WindowMerger(W, sources=2, idle=10.0)
    merger.assign(0, now=100.0)
    merger.add_mark(0, FeaturesWatermark(source=0, closed_until=120.0), now=101.0)
    assert merger.closed_until(0, now=105.0) is None  # source 1 never heard, still waited for
    merger.add_mark(0, FeaturesWatermark(source=1, closed_until=180.0), now=106.0)
    assert merger.closed_until(0, now=107.0) == 120.0
    assert merger.closed_until(0, now=114.0) == 180.0  # source 0 silent for > idle: left out, as ready() does
    assert merger.closed_until(0, now=200.0) is None  # everyone silent


def test_event_time_bans_start_ban_delay_after_their_window():
    arrival = Settings(ban_timing="arrival").bans
    timed = Settings(ban_timing="event_time", ban_delay=D).bans
    assert next_ban(None, flag(IP, 600.0), arrival).start == 600.0
    assert next_ban(None, flag(IP, 600.0), timed).start == 600.0 + D


def test_readers_tell_marks_and_horizons_from_flags():
    values = [msgspec.json.encode(flag(IP, 600.0)), msgspec.json.encode(FlagsWatermark(0, 600.0)), None, b"not json"]
    assert only_flags(values) == [values[0], b"not json"]  # a bad record is left to the reader's decoder
    assert is_mark(values[1]) and not is_mark(values[0])
    assert is_horizon_key("horizon:3") and not is_horizon_key("ip:203.0.113.9")
