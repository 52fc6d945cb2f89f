"""The allow-list's routes and the console's ``form#allow`` on a gateway without Kafka (``gateway_fakes``):
roles, 422 for bad CIDRs, the static seed not removable (409), and the form allow-listing the subject
and lifting its automatic ban (a manual ban stays)."""

import re
import time

import pytest

from schemas.limits import BlocklistEntry
from tests.unit.gateway_fakes import api_client

NOW = time.time()


@pytest.fixture
def api():
    for client in api_client(allowlist_cidrs="192.0.2.0/24"):
        client.app.state.console.pulse.ensure_started = lambda: None  # no Kafka: the reader stays off
        yield client


def test_admins_add_and_remove_analysts_read_others_are_refused(api):
    admin, analyst = api.key_for("admin"), api.key_for("analyst")
    put = api.put("/allowlist/203.0.113.9", json={"reason": "office"}, headers=admin)
    assert put.status_code == 200, put.text
    assert put.json() | {"added_at": 0} == {"network": "203.0.113.9/32", "reason": "office", "added_at": 0,
                                            "added_by": "admin-1", "static": False}
    assert api.put("/allowlist/2001:db8:1:2::9/64", headers=admin).json()["network"] == "2001:db8:1:2::/64"
    listed = api.get("/allowlist", headers=analyst).json()["entries"]
    assert [(e["network"], e["static"]) for e in listed] == [
        ("192.0.2.0/24", True), ("2001:db8:1:2::/64", False), ("203.0.113.9/32", False)]
    assert api.gateway.allowlist.contains("2001:db8:1:2::77") and api.gateway.allowlist.contains("203.0.113.9")
    for role in ("client", "service", "analyst"):
        assert api.put("/allowlist/198.51.100.1", headers=api.key_for(role)).status_code == 403
        assert api.delete("/allowlist/203.0.113.9", headers=api.key_for(role)).status_code == 403
    for role in ("client", "service"):
        assert api.get("/allowlist", headers=api.key_for(role)).status_code == 403
    assert api.delete("/allowlist/2001:db8:1:2::1/64", headers=admin).status_code == 204  # any spelling
    assert api.delete("/allowlist/203.0.113.9", headers=admin).status_code == 204
    assert not api.gateway.allowlist.contains("203.0.113.9")
    assert api.delete("/allowlist/203.0.113.9", headers=admin).status_code == 404


def test_bad_cidrs_are_422_and_the_static_seed_is_409(api):
    admin = api.key_for("admin")
    for path in ("/allowlist/not-an-ip", "/allowlist/192.0.2.1/33", "/allowlist/2001:db8::/129",
                 "/allowlist/192.0.2.1/-1"):
        answer = api.put(path, headers=admin)
        assert answer.status_code == 422, (path, answer.text)
    assert "not an IPv4 or IPv6 network" in api.put("/allowlist/not-an-ip", headers=admin).json()["detail"][0]["msg"]
    assert api.put("/allowlist/192.0.2.1", json={"reason": ""}, headers=admin).status_code == 422
    static = api.delete("/allowlist/192.0.2.0/24", headers=admin)
    assert static.status_code == 409 and "RATEWARDEN_ALLOWLIST_CIDRS" in static.json()["detail"]
    assert api.gateway.allowlist.contains("192.0.2.7")


def test_routes_are_in_the_openapi_document(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths["/allowlist"]) == {"get"}
    assert set(paths["/allowlist/{address}"]) == set(paths["/allowlist/{address}/{prefix}"]) == {"put", "delete"}


def _admin_token(client) -> str:
    login = client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
    assert client.post("/console/login", data={"key": client.keys["admin"], "csrf": token},
                       follow_redirects=False).status_code == 303
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/console/bans").text).group(1)


def test_the_console_allow_form_allowlists_and_lifts_the_automatic_ban(api):
    blocklist = api.gateway.blocklist
    blocklist.put("ip", "203.0.113.7", BlocklistEntry("203.0.113.7", "ip", "auto:flood", NOW - 60, 300.0))
    blocklist.put("ip", "203.0.113.8", BlocklistEntry("203.0.113.8", "ip", "manual", NOW - 60, 300.0))
    blocklist.put("network", "2001:db8::/64", BlocklistEntry("2001:db8::/64", "network", "auto:flood", NOW, 300.0))
    token = _admin_token(api)
    assert 'id="allowlisted"' not in api.get("/console/ip/203.0.113.7").text
    done = api.post("/console/ip/203.0.113.7/allow", data={"csrf": token, "reason": "office"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/console/ip/203.0.113.7"
    assert api.gateway.allowlist.entry("203.0.113.7/32").added_by == "admin-1"
    assert not any(e.subject == "203.0.113.7" for e in blocklist.entries())
    page = api.get("/console/ip/203.0.113.7").text
    assert 'id="allowlisted"' in page and "allow-listed" in page
    manual = api.post("/console/ip/203.0.113.8/allow", data={"csrf": token}, follow_redirects=False)
    assert manual.status_code == 303 and any(e.subject == "203.0.113.8" for e in blocklist.entries())  # kept
    assert api.gateway.allowlist.entry("203.0.113.8/32").reason == "console"
    net = api.post("/console/network/2001:db8::5/64/allow", data={"csrf": token}, follow_redirects=False)
    assert net.status_code == 303 and net.headers["location"] == "/console/network/2001:db8::/64"
    assert api.gateway.allowlist.entry("2001:db8::/64") and not any(e.kind == "network" for e in blocklist.entries())
    assert api.post("/console/ip/not-an-ip/allow", data={"csrf": token}).status_code == 404
    assert api.post("/console/ip/203.0.113.9/allow", data={"csrf": token, "reason": "\x01"}).status_code == 400
    assert api.post("/console/ip/203.0.113.9/allow", data={"reason": "x"}).status_code == 403  # no CSRF token
