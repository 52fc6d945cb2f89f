"""The console's windows over time on the real broker, a worker and the gateway.

A simulated trace with a flood is replayed through a worker; once the analytics have closed the
trace's last window, the flood address's page (``/console/ip/{address}``) shows ``table#windows``
with one ``tr.window`` per window it sent requests in, and its requests, users and refused share per
window equal the decisions counted independently from the ``decisions`` topic for that address.
The chart's JSON (``/console/data/ip/{address}``) carries the same requests.
"""

import math
import re
import time
from collections import defaultdict

import httpx
import msgspec
import pytest

from ratewarden.gateway.console.web import share
from ratewarden.gateway.server import GatewayThread
from ratewarden.gateway.testing import wait_until as wait_for
from ratewarden.gateway.users import create_user
from ratewarden.simulate import simulate
from schemas.events import RequestEvent
from schemas.flags import AbuseReport, FeaturesWatermark, IpPartial
from streams.kafka_io import partition_for
from tests.integration.test_analytics_pipeline import decode_all, first_decisions, wait_until

pytestmark = pytest.mark.kafka

MINUTES, USERS, SEED, WINDOW = 4, 100, 7, 60.0
ROW = re.compile(r'<tr class="window[^"]*" data-start="(\d+)">(.*?)</tr>', re.S)
CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


def tick_users(partitions: int) -> list[str]:
    """One user id per ``decisions`` partition (decisions are keyed by user)."""
    found: dict[int, str] = {}
    for i in range(10_000):
        found.setdefault(partition_for(f"tick-user-{i}", partitions), f"tick-user-{i}")
        if len(found) == partitions:
            break
    return [found[p] for p in range(partitions)]


def expected_windows(pipeline, ip: str) -> dict[int, tuple[int, int, str]]:
    """Per window start: (requests, distinct users, refused share as the page writes it) of ``ip``'s decisions."""
    requests: dict[int, int] = defaultdict(int)
    refused: dict[int, int] = defaultdict(int)
    users: dict[int, set[str]] = defaultdict(set)
    for d in first_decisions(pipeline).values():
        if d.ip != ip:
            continue
        start = int(math.floor(d.ts_event / WINDOW) * WINDOW)
        requests[start] += 1
        refused[start] += d.verdict != "allow"
        users[start].add(d.user_id)
    return {s: (n, len(users[s]), share(refused[s] / n)) for s, n in requests.items()}


def topic_windows(pipeline, ip: str) -> dict:
    """The partials of ``ip`` on the whole of ip-features, per window: (source, requests, partition, offset)."""
    decode = msgspec.json.Decoder(IpPartial | FeaturesWatermark).decode
    out: dict[int, list] = defaultdict(list)
    for r in pipeline.read_topic(pipeline.settings.ip_features_topic):
        p = decode(r.value)
        if isinstance(p, IpPartial) and p.ip == ip:
            out[int(p.window_start)].append((p.source, p.requests, r.partition, r.offset))
    return dict(out)


def page_windows(text: str) -> dict[int, tuple[int, int, str]]:
    rows = {}
    for start, row in ROW.findall(text):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in CELL.findall(row)]
        rows[int(start)] = (int(cells[1]), int(cells[2]), cells[4])
    return rows


def test_the_flood_page_shows_its_windows_as_the_decisions_count_them(make_pipeline):
    sim = simulate(minutes=MINUTES, users=USERS, seed=SEED, start_ts=time.time() - MINUTES * 60 - 2 * WINDOW - 5)
    pipeline = make_pipeline(default_limit=100, analytics_window=WINDOW, allowlist_cidrs=",".join(sim.labels["allowlist"]))
    s = pipeline.settings
    pipeline.start_worker()
    pipeline.replay(sim.events, timeout=180.0)
    # Later requests close the trace's last window in every decisions partition (each keeps its own
    # event time): one tick per partition, from elsewhere. Done when that window is reported complete.
    last_ts = sim.events[-1].ts
    pipeline.replay([RequestEvent(f"tick-{p}", user, "198.51.100.250", "read", last_ts + 2 * WINDOW)
                     for p, user in enumerate(tick_users(s.partitions))])
    last_end = (math.floor(last_ts / WINDOW) + 1) * WINDOW
    wait_until(pipeline, lambda: [r for _, r in decode_all(pipeline.read_topic(s.abuse_reports_topic), AbuseReport)],
               lambda got: any(r.window_end >= last_end and not r.missing_sources for r in got), timeout=90)
    flood = sim.labels["kinds"]["flood"][0]
    expected = expected_windows(pipeline, flood)
    assert len(expected) >= 2, f"the flood {flood} sent requests in {len(expected)} window(s)"
    key = create_user("analyst-1", "analyst", s)[1]
    headers = {"Authorization": f"Bearer {key}"}
    with GatewayThread(s) as gateway:
        def read():
            answer = httpx.get(f"{gateway.url}/console/ip/{flood}", headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            return 'id="windows-unknown"' not in answer.text and answer.text  # unknown: Kafka was slow, again
        text = wait_for(read, 30, "the flood's windows read from ip-features", interval=1.0)
        data = httpx.get(f"{gateway.url}/console/data/ip/{flood}", headers=headers, timeout=30).json()["windows"]
    assert '<table id="windows">' in text and 'data-series="windows"' in text
    shown = page_windows(text)
    print(f"[console windows] {flood}: {len(shown)} windows shown, {sum(r[0] for r in shown.values())} requests; "
          f"decisions topic: {len(expected)} windows, {sum(r[0] for r in expected.values())} requests")
    assert shown == expected, f"page {shown}, decisions {expected}, ip-features {topic_windows(pipeline, flood)}"
    assert any('class="window flagged"' in row for row in re.findall(r'<tr class="window[^>]*>', text)), \
        "no window of the flood marked flagged"
    assert dict(zip(map(int, data["t"]), data["requests"])) == {s: r[0] for s, r in expected.items()}
