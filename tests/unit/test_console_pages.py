"""The console's pages on a gateway without Kafka (``gateway_fakes``): flags, evidence, bans and forms as
rendered, escaping of user-controlled text, and the refusals htmx follows to the login page; a subject's
windows merged from ``ip-features`` partials (markers skipped, what does not decode counted)."""

import asyncio
import logging
import re
import time

import msgspec
import pytest

from ratewarden.gateway.console import sources as console_sources
from ratewarden.gateway.console.sources import UNDECODABLE, Sources, decode_tail
from ratewarden.gateway.console.windows import features_key, merge_windows, window_series
from schemas.decisions import Decision
from schemas.flags import AutoBan, FeaturesWatermark, FlagsWatermark, IpFlag, IpPartial
from schemas.limits import BlocklistEntry
from streams.settings import Settings
from tests.unit.gateway_fakes import FakeTopics, api_client, decision, partial
from tests.unit.test_console_pulse import flag

NOW = time.time()
W1, W2 = NOW - 120, NOW - 60  # the windows of the flags below
EVIL = '<script>alert("x")</script>'
FEATURES = "ip-features"


def features_topic() -> FakeTopics:
    """ip-features as stage 1 writes it: partials keyed by network (else address), markers on every partition."""
    topics, enc = FakeTopics(), msgspec.json.encode
    for key, record in (
            ("203.0.113.7", partial("203.0.113.7", W1, 0, requests=40, users=1, throttled=5)),
            ("203.0.113.7", partial("203.0.113.7", W1, 1, requests=60, users=2, logins=30, blocked=15)),
            ("192.0.2.9", partial("192.0.2.9", W2, 0, requests=7)),
            ("2001:db8::/64", partial("2001:db8::/64", W2, 0, requests=80, users=4, kind="network")),
            ("2001:db8::/64", partial("2001:db8::1", W2, 0, requests=30, network="2001:db8::/64")),
            ("203.0.113.7", partial("203.0.113.7", W2, 2, requests=50, users=1))):
        topics.add(FEATURES, key, enc(record))
        if key == "203.0.113.7" and record.window_start == W1:
            for p in range(topics.partitions):
                topics.add(FEATURES, None, enc(FeaturesWatermark(record.source, W1)), partition=p)
    topics.add(FEATURES, "203.0.113.7", b'{"type": "partial", "ip": 7}')  # neither partial nor marker
    return topics


@pytest.fixture
def console(monkeypatch):
    topics = features_topic()
    monkeypatch.setattr(console_sources, "tail_records", topics.tail)
    for client in api_client():
        client.topics = topics
        state = client.app.state.console
        state.pulse.ensure_started = lambda: None  # no Kafka here: the reader stays off
        flags = [flag("203.0.113.7", NOW - 120, 9.5, ["flood"], "high"),
                 flag("203.0.113.7", NOW - 60, 7.0, ["flood", "scraper"], "medium"),
                 flag("2001:db8::/64", NOW - 60, 8.0, ["flood"], "high", "network"),
                 flag("192.0.2.9", NOW - 60, 6.5, ["hammering"], "low")]
        offence = AutoBan("203.0.113.7", "ip", "auto:flood", NOW - 60, 300.0, offences=2, rules=["flood"])

        async def flags_read():
            return flags

        async def offences_read():
            return {offence.subject: offence}

        async def no_lag():
            return None

        state.sources.flags, state.sources.offences, state.sources.lag = flags_read, offences_read, no_lag
        state.pulse.recent.append(msgspec.json.encode(decision(ip="203.0.113.7", user_id=EVIL, verdict="block")))
        for subject, kind, reason in (("203.0.113.7", "ip", "auto:flood"), ("2001:db8::/64", "network", EVIL),
                                      ("mallory", "user", "manual")):
            entry = BlocklistEntry(subject, kind, reason, time.time() - 60, 300.0)  # active now (the page asks the clock)
            client.gateway.blocklist.put(kind, subject, entry)
        yield client


def page(client, path: str, role: str = "analyst") -> str:
    answer = client.get(path, headers=client.key_for(role))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    return answer.text


def test_flags_are_listed_per_subject_and_filtered(console):
    text = page(console, "/console/flags")
    rows = re.findall(r'<tr class="flag[^"]*">(.*?)</tr>', text, re.S)
    assert len(rows) == 3 and "203.0.113.7" in rows[0] and "9.5" in rows[0] and "flood, scraper" in rows[0]
    assert 'href="/console/network/2001:db8::/64"' in text
    filtered = page(console, "/console/flags?rule=hammering&severity=low")
    assert filtered.count('<tr class="flag') == 1 and "192.0.2.9" in filtered
    assert console.get("/console/flags?severity=extreme", headers=console.key_for("admin")).status_code == 400


def test_an_address_page_shows_rules_evidence_bans_and_escaped_decisions(console):
    text = page(console, "/console/ip/203.0.113.7")
    assert "<title>IP 203.0.113.7" in text and "<h1>IP 203.0.113.7</h1>" in text
    assert re.findall(r'<li class="rule" data-rule="([a-z_]+)"', text) == ["flood", "scraper"]
    evidence = text.split('id="evidence"')[1].split("</div>")[0]
    assert "score 9.5" in evidence
    assert 'data-feature="requests"' in evidence and 'data-feature="login_share"' in evidence
    bans = text.split('<table id="bans">')[1].split("</table>")[0]
    assert bans.count('<tr class="ban">') == 1 and '<td class="num repeat">2</td>' in bans
    assert EVIL not in text and "&lt;script&gt;" in text
    assert 'id="unban"' not in text and 'id="ban"' not in text  # an analyst


def test_an_admin_gets_the_forms_with_the_session_token_only(console):
    text = page(console, "/console/ip/203.0.113.7", "admin")
    for form in ("ban", "unban", "allow"):
        assert f'<form id="{form}" method="post" action="/console/ip/203.0.113.7/{form}">' in text
    assert 'name="csrf" value=""' in text  # a bearer key gets no token: its forms are refused (no session)
    network = page(console, "/console/network/2001:db8:0:0:1::/64", "admin")
    assert "<h1>Network 2001:db8::/64</h1>" in network and 'data-feature="addresses"' in network
    assert EVIL not in network
    bans = page(console, "/console/bans", "admin")
    assert bans.count('<tr class="ban') == 3 and bans.count('<form class="lift"') == 3
    assert 'data-subject="mallory"' in bans and "automatic" in bans and EVIL not in bans


def test_a_user_page_and_the_limits_page(console, monkeypatch):
    async def history(user_id, limit, before):
        items = [{"ts": NOW - i, "request_id": f"r{i}", "request_type": "read", "ip": "192.0.2.1",
                  "verdict": "allow" if i % 4 else "throttle", "reason": "x"} for i in range(8)]
        return {"user_id": user_id, "requests": items, "next_before": None}

    monkeypatch.setattr(console.gateway.history, "read", history)
    text = page(console, "/console/users/alice", "admin")
    assert "<h1>User alice</h1>" in text and text.count('<tr class="request') == 8
    assert '<strong id="refused-share">25.0%</strong>' in text and 'id="limit-edit"' in text
    assert "the default" in text
    limits = page(console, "/console/limits")
    assert 'id="limits"' in limits and 'id="limit-edit"' not in limits
    assert console.get("/console/users/a%20b", headers=console.key_for("admin")).status_code == 404


def test_the_overview_counts_and_htmx_is_sent_to_the_login_page(console):
    counts = console.app.state.console.pulse.counts
    for verdict in ("allow", "allow", "throttle"):
        counts.add(verdict, "bob", NOW - 2)
    part = page(console, "/console/parts/overview")
    assert '<strong id="decisions-total">3</strong>' in part and 'href="/console/users/bob"' in part
    assert 'hx-get="/console/parts/overview" hx-trigger="every 1s"' in page(console, "/console/")
    expired = console.get("/console/parts/overview", headers={"HX-Request": "true"})
    assert expired.status_code == 401 and expired.headers["HX-Redirect"] == "/console/login"
    assert "unknown" in page(console, "/console/parts/health")


def test_recent_decisions_decode_what_the_pulse_kept(console):
    pulse = console.app.state.console.pulse
    pulse.recent.append(b"not json")
    assert [d.user_id for d in pulse.recent_decisions()] == [EVIL]
    assert isinstance(pulse.recent_decisions()[0], Decision)


def sign_in(client, role: str):
    login = client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
    return client.post("/console/login", data={"key": client.keys[role], "csrf": token}, follow_redirects=False)


def test_over_https_the_session_cookie_is_secure_and_an_admin_session_lifts_a_ban(console):
    console.base_url = "https://testserver"
    answer = sign_in(console, "admin")
    assert answer.status_code == 303
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("rw_session="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    bans = console.get("/console/bans").text
    token = re.search(r'name="csrf" value="([^"]+)"', bans).group(1)
    lifted = console.post("/console/bans/lift", data={"csrf": token, "kind": "user", "subject": "mallory"},
                          follow_redirects=False)
    assert lifted.status_code == 303 and lifted.headers["location"] == "/console/bans"
    assert not any(e.subject == "mallory" for e in console.gateway.blocklist.entries())
    again = console.post("/console/bans/lift", data={"csrf": token, "kind": "user", "subject": "mallory"})
    assert again.status_code == 404 and "not on the blocklist" in again.text
    allowed = console.post("/console/ip/203.0.113.7/allow", data={"csrf": token}, follow_redirects=False)
    assert allowed.status_code == 303 and console.gateway.allowlist.contains("203.0.113.7")
    bad = console.post("/console/limits", data={"csrf": token, "user_id": "tier:x", "limit": "5"})
    assert bad.status_code == 400 and "cannot have a limit" in bad.text
    out = console.post("/console/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303 and console.get("/console/bans").status_code == 401


def test_an_admin_sets_and_removes_a_limit_from_the_limits_page(console):
    assert sign_in(console, "admin").status_code == 303
    token = re.search(r'name="csrf" value="([^"]+)"', console.get("/console/limits").text).group(1)
    fields = {"csrf": token, "user_id": "carol", "limit": "5", "window": "10", "request_type": "login",
              "algorithm": "sliding", "shadow": "on"}
    assert console.post("/console/limits", data=fields, follow_redirects=False).status_code == 303
    limit = console.gateway.limits.get("carol\x1flogin")
    assert (limit.limit, limit.window, limit.algorithm, limit.shadow) == (5, 10.0, "sliding", True)
    text = console.get("/console/limits").text
    assert text.count('<form class="limit-remove"') == 1 and 'data-user="carol"' in text
    removed = console.post("/console/limits/remove", data={"csrf": token, "user_id": "carol", "request_type": "login"},
                           follow_redirects=False)
    assert removed.status_code == 303 and console.gateway.limits.get("carol\x1flogin") is None
    assert console.post("/console/limits/remove", data={"csrf": token, "user_id": "carol"}).status_code == 404


def test_partials_of_several_sources_and_windows_merge_into_rows():
    parts = [partial("192.0.2.1", 60.0, 0, requests=30, users=2, logins=15, throttled=3),
             partial("192.0.2.1", 60.0, 1, requests=10, users=1, blocked=1),
             partial("192.0.2.1", 60.0, 1, requests=10, users=1, blocked=1),  # re-published by a restarted stage 1
             partial("192.0.2.1", 120.0, 3, requests=5, users=1, logins=5),
             partial("192.0.2.2", 60.0, 0, requests=99)]
    flags = [flag("192.0.2.1", 120.0, 8.0, ["credential_stuffing"]), flag("192.0.2.2", 60.0, 9.0, ["flood"])]
    rows = merge_windows(parts, "192.0.2.1", "ip", 60.0, flags)
    assert [(r.start, r.end, r.requests, r.users, r.sources, r.rules) for r in rows] == [
        (120.0, 180.0, 5, 1, [3], ["credential_stuffing"]), (60.0, 120.0, 40, 3, [0, 1], [])]
    assert rows[1].login_share == 15 / 40 and rows[1].refused_share == 4 / 40 and rows[0].score == 8.0
    assert window_series(rows) == {"t": [60.0, 120.0], "requests": [40, 5], "users": [3, 1]}
    assert merge_windows([], "192.0.2.1", "ip", 60.0) == []


def test_a_network_merges_its_own_partials_and_its_addresses_share_its_key():
    parts = [partial("2001:db8::/64", 0.0, 0, requests=20, users=3, kind="network"),
             partial("2001:db8::/64", 0.0, 2, requests=5, users=1, kind="network"),
             partial("2001:db8::5", 0.0, 0, requests=12, network="2001:db8::/64")]
    assert [(r.requests, r.users) for r in merge_windows(parts, "2001:db8::/64", "network", 60.0)] == [(25, 4)]
    assert [r.requests for r in merge_windows(parts, "2001:db8::5", "ip", 60.0)] == [12]
    settings = Settings()
    assert features_key("2001:db8::5", "ip", settings) == "2001:db8::/64"
    assert features_key("2001:db8::/64", "network", settings) == "2001:db8::/64"
    assert features_key("192.0.2.1", "ip", settings) == "192.0.2.1"  # IPv4 is not aggregated by default
    assert features_key("192.0.2.1", "ip", Settings(network_v4_prefix=24)) == "192.0.2.0/24"


def test_markers_are_skipped_and_what_does_not_decode_is_logged_and_counted(caplog):
    enc = msgspec.json.encode
    values = [enc(partial("192.0.2.1", 0.0, 0)), enc(FeaturesWatermark(0, 60.0)), b"{not json", b'{"type": "x"}']
    before = UNDECODABLE.labels("t")._value.get()
    with caplog.at_level(logging.WARNING):
        records, markers, bad = decode_tail(values, msgspec.json.Decoder(IpPartial | FeaturesWatermark).decode, "t")
    assert [r.ip for r in records] == ["192.0.2.1"] and (markers, bad) == (1, 2)
    assert UNDECODABLE.labels("t")._value.get() == before + 2
    assert "2 of 4 records read from t do not decode" in caplog.text


def test_flags_skip_the_progress_markers_of_ip_flags(monkeypatch, caplog):
    topics, settings = FakeTopics(), Settings()
    for value in (msgspec.json.encode(flag("192.0.2.1", W1, 7.0, ["flood"])),
                  msgspec.json.encode(FlagsWatermark(source=0, closed_until=W2)), b"garbage"):
        topics.add(settings.ip_flags_topic, "192.0.2.1", value)
    monkeypatch.setattr(console_sources, "tail_records", topics.tail)
    before = UNDECODABLE.labels(settings.ip_flags_topic)._value.get()
    with caplog.at_level(logging.WARNING):
        flags = asyncio.run(Sources(settings).flags())
    assert [type(f) for f in flags] == [IpFlag]
    assert UNDECODABLE.labels(settings.ip_flags_topic)._value.get() == before + 1  # the marker is not counted
    assert "1 of 3 records read from ip-flags do not decode" in caplog.text


def window_rows(text: str) -> list[list[str]]:
    table = text.split('<table id="windows">')[1].split("</table>")[0]
    rows = re.findall(r'<tr class="window[^"]*"[^>]*>(.*?)</tr>', table, re.S)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in rows]


def test_an_address_page_shows_its_windows_over_time_from_ip_features(console):
    text = page(console, "/console/ip/203.0.113.7")
    rows = window_rows(text)
    assert [r[1:] for r in rows] == [["50", "1", "0.0%", "0.0%", "7.0", "flood, scraper"],
                                     ["100", "3", "30.0%", "20.0%", "9.5", "flood"]]
    assert 'class="window flagged"' in text and "1 did not decode" in text and "the oldest window may lack" not in text
    assert 'data-src="/console/data/ip/203.0.113.7" data-series="windows"' in text
    assert '<script src="/console/static/console.js" defer></script>' in text
    assert (FEATURES, "203.0.113.7") in console.topics.reads  # the subject's one partition, by its key
    data = console.get("/console/data/ip/203.0.113.7", headers=console.key_for("analyst")).json()
    assert data == {"windows": {"t": [W1, W2], "requests": [100, 50], "users": [3, 1]}}
    assert console.get("/console/data/ip/203.0.113.7").status_code == 401


def test_a_network_page_and_an_address_inside_it_read_the_network_partition(console):
    network = page(console, "/console/network/2001:db8::/64")
    assert [r[1:3] for r in window_rows(network)] == [["80", "4"]]
    assert 'data-src="/console/data/network/2001:db8::/64"' in network
    address = page(console, "/console/ip/2001:db8::1")
    assert [r[1] for r in window_rows(address)] == ["30"]
    assert console.topics.reads.count((FEATURES, "2001:db8::/64")) == 1  # cached: one read for both pages


def test_no_windows_and_unknown_windows(console, monkeypatch):
    quiet = page(console, "/console/ip/198.51.100.1")
    assert window_rows(quiet) == [] and re.search(r"no windows in the last \d+ records", quiet)

    async def silent(*args, **kwargs):
        raise TimeoutError

    monkeypatch.setattr(console_sources, "tail_records", silent)
    unknown = page(console, "/console/ip/198.51.100.2")
    assert 'id="windows-unknown"' in unknown and '<td colspan="7">unknown</td>' in unknown
    assert console.get("/console/data/ip/198.51.100.3", headers=console.key_for("analyst")).json() == {"windows": None}


def test_a_read_cut_at_its_depth_says_the_oldest_window_may_be_incomplete(console, monkeypatch):
    monkeypatch.setattr(console_sources, "FEATURES_DEPTH", 3)
    text = page(console, "/console/ip/203.0.113.7")
    assert "the last 3 records of its partition" in text and "the oldest window may lack" in text
    assert len(window_rows(text)) >= 1
