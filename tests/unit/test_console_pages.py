"""The console's pages on a gateway without Kafka (``gateway_fakes``): flags, evidence, bans and forms as
rendered, escaping of user-controlled text, and the refusals htmx follows to the login page."""

import re
import time

import msgspec
import pytest

from schemas.decisions import Decision
from schemas.flags import AutoBan
from schemas.limits import BlocklistEntry
from tests.unit.gateway_fakes import api_client, decision
from tests.unit.test_console_pulse import flag

NOW = time.time()
EVIL = '<script>alert("x")</script>'


@pytest.fixture
def console():
    for client in api_client():
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
            entry = BlocklistEntry(subject, kind, reason, NOW - 60, 300.0)
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
    refused = console.post("/console/ip/203.0.113.7/allow", data={"csrf": token})
    assert refused.status_code == 409 and "RATEWARDEN_ALLOWLIST_CIDRS" in refused.text
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
