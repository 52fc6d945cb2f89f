"""The web console against the real broker, a worker and the gateway: who may see and change what.

Every console page: 401 without a session or key, 403 for client and service keys, 200 for analysts
and admins; forms that change state need a session, its CSRF token and the admin role; the CSP
header is on every answer; a login sets a signed HttpOnly SameSite cookie and a logout clears it;
an admin's unban through the console form reaches the blocklist; the overview's live fragment shows
new decisions within 2 s.
"""

import re
import time
import uuid
from contextlib import closing

import httpx
import pytest

from ratewarden.gateway.metrics import AUTH_FAILURES
from ratewarden.gateway.testing import GatewayStack, wait_until

pytestmark = pytest.mark.kafka

PAGES = [
    "/console/", "/console/flags", "/console/flags?rule=flood&severity=high&since=0&until=2026-12-31T00:00",
    "/console/bans", "/console/limits", "/console/ip/203.0.113.7", "/console/network/2001:db8::/64",
    "/console/users/alice", "/console/parts/overview", "/console/parts/health", "/console/data/overview.json",
]
FORMS = [
    ("/console/ip/192.0.2.60/ban", {"reason": "matrix", "ttl": "60"}), ("/console/ip/192.0.2.61/unban", {}),
    ("/console/ip/192.0.2.62/allow", {}), ("/console/network/2001:db8:9::/64/ban", {"ttl": "60"}),
    ("/console/network/2001:db8:9::/64/unban", {}), ("/console/bans/lift", {"kind": "ip", "subject": "192.0.2.63"}),
    ("/console/limits", {"user_id": "console-matrix", "limit": "7"}),
]
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
WRONG = "rw_" + "x" * 43


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    # room for the matrix's wrong keys: the failed-key limiter would answer 429 past 20 a minute
    with GatewayStack(kafka_bootstrap, tmp_path_factory.mktemp("console"), gateway_auth_max_failures=500) as stack:
        yield stack


def browser(stack: GatewayStack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=30)


def csrf_on(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return CSRF.search(page.text).group(1)


def sign_in(stack: GatewayStack, role: str) -> httpx.Client:
    client = browser(stack)
    answer = client.post("/console/login", data={"key": stack.keys[role], "csrf": csrf_on(client, "/console/login")})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/", answer.text
    return client


def bearer(stack: GatewayStack, who: str) -> dict[str, str]:
    key = {"none": None, "wrong": WRONG}.get(who, stack.keys.get(who))
    return {"Authorization": f"Bearer {key}"} if key else {}


def test_every_page_refuses_without_a_session_and_to_client_and_service_keys(stack):
    expected = {"none": 401, "wrong": 401, "client": 403, "service": 403, "analyst": 200, "admin": 200}
    with browser(stack) as http:
        for path in PAGES:
            got = {}
            for who in expected:
                answer = http.get(path, headers=bearer(stack, who))
                got[who] = answer.status_code
                assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'"), path
                if answer.status_code == 401:
                    assert 'href="/console/login"' in answer.text
            assert got == expected, path


def test_forms_need_a_session_its_csrf_token_and_the_admin_role(stack):
    analyst, admin = sign_in(stack, "analyst"), sign_in(stack, "admin")
    analyst_token, admin_token = csrf_on(analyst, "/console/bans"), csrf_on(admin, "/console/bans")
    with browser(stack) as anonymous, closing(analyst), closing(admin):
        for path, fields in FORMS:
            cases = {
                "no session": (anonymous.post(path, data={**fields, "csrf": admin_token}), 401),
                "client key": (anonymous.post(path, data=fields, headers=bearer(stack, "client")), 403),
                "service key": (anonymous.post(path, data=fields, headers=bearer(stack, "service")), 403),
                "admin key, no session": (anonymous.post(path, data=fields, headers=bearer(stack, "admin")), 403),
                "analyst session": (analyst.post(path, data={**fields, "csrf": analyst_token}), 403),
                "admin, no csrf": (admin.post(path, data=fields), 403),
                "admin, forged csrf": (admin.post(path, data={**fields, "csrf": admin_token[:-2] + "xx"}), 403),
                "admin, analyst's csrf": (admin.post(path, data={**fields, "csrf": analyst_token}), 403),
            }
            for case, (answer, status) in cases.items():
                assert answer.status_code == status, (path, case, answer.text)
                assert "Content-Security-Policy" in answer.headers
        login = anonymous.post("/console/login", data={"key": stack.keys["admin"], "csrf": "forged"})
        assert login.status_code == 403 and "rw_session" not in login.headers.get("set-cookie", "")


def test_login_sets_a_strict_httponly_cookie_and_logout_clears_it(stack):
    client = browser(stack)
    failures = AUTH_FAILURES._value.get()
    bad = client.post("/console/login", data={"key": WRONG, "csrf": csrf_on(client, "/console/login")})
    assert bad.status_code == 401 and 'id="login-form"' in bad.text and WRONG not in bad.text
    assert AUTH_FAILURES._value.get() == failures + 1  # counted by the failed-authentication limiter
    for role in ("client", "service"):
        token = csrf_on(client, "/console/login")
        refused = client.post("/console/login", data={"key": stack.keys[role], "csrf": token})
        assert refused.status_code == 403 and "rw_session" not in refused.headers.get("set-cookie", "")
    token = csrf_on(client, "/console/login")
    answer = client.post("/console/login", data={"key": stack.keys["analyst"], "csrf": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("rw_session="))
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert "httponly" in attributes and attributes["samesite"].lower() == "samesite=strict"
    assert attributes["max-age"] == "Max-Age=28800" and "secure" not in attributes  # plain HTTP here
    assert stack.keys["analyst"] not in cookie
    overview = client.get("/console/")
    assert overview.status_code == 200 and 'id="logout-form"' in overview.text
    assert overview.text.count("<title>Overview") == 1 and "<h1>Overview</h1>" in overview.text
    assert 'id="unban"' not in client.get("/console/ip/203.0.113.7").text  # an analyst sees no write action
    out = client.post("/console/logout", data={"csrf": csrf_on(client, "/console/")})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    cleared = next(c for c in out.headers.get_list("set-cookie") if c.startswith("rw_session="))
    assert "Max-Age=0" in cleared or "expires=Thu, 01 Jan 1970" in cleared
    assert client.get("/console/").status_code == 401
    forged = browser(stack)
    forged.cookies.set("rw_session", cookie.split(";")[0].split("=", 1)[1][:-3] + "abc", path="/console")
    assert forged.get("/console/").status_code == 401


def test_an_admin_unban_through_the_console_form_lifts_the_ban(stack):
    ip = "198.51.100.44"
    admin = sign_in(stack, "admin")
    with stack.client("admin") as api, closing(admin):
        assert api.put(f"/blocklist/{ip}", json={"reason": "console-test", "ttl": 600}).status_code == 200
        page = admin.get(f"/console/ip/{ip}")
        assert "<title>IP 198.51.100.44" in page.text and 'id="unban"' in page.text and 'id="ban"' in page.text
        assert "console-test" in page.text.split('id="bans"')[1]
        answer = admin.post(f"/console/ip/{ip}/unban", data={"csrf": CSRF.search(page.text).group(1)})
        assert answer.status_code == 303 and answer.headers["location"] == f"/console/ip/{ip}"
        assert all(e["subject"] != ip for e in api.get("/blocklist").json()["entries"])
        banned = admin.post(f"/console/ip/{ip}/ban", data={"csrf": csrf_on(admin, "/console/bans"), "ttl": "120",
                                                             "reason": "<script>x</script>"})
        assert banned.status_code == 303
        entry = next(e for e in api.get("/blocklist").json()["entries"] if e["subject"] == ip)
        assert (entry["reason"], entry["ttl"]) == ("<script>x</script>", 120.0)
        bans = admin.get("/console/bans").text
        assert "&lt;script&gt;x&lt;/script&gt;" in bans and "<script>x</script>" not in bans  # escaped
        user = f"console-{uuid.uuid4().hex[:6]}"
        edit = admin.post("/console/limits", data={"csrf": csrf_on(admin, "/console/limits"), "user_id": user,
                                                   "limit": "9", "window": "30", "next": f"/console/users/{user}"})
        assert edit.status_code == 303 and edit.headers["location"] == f"/console/users/{user}"
        assert api.get(f"/limits/{user}").json()["limit"] == 9
        assert "9 per 30.0 s" in admin.get(f"/console/users/{user}").text


def test_the_overview_shows_new_decisions_within_two_seconds(stack):
    analyst = sign_in(stack, "analyst")
    total = re.compile(r'id="decisions-total">(\d+)<')
    with closing(analyst), stack.client("service") as service:
        assert analyst.get("/console/").status_code == 200  # starts the console's reader of decisions

        def counted() -> int:
            return int(total.search(analyst.get("/console/parts/overview").text).group(1))

        def submit(n: int) -> None:
            for _ in range(n):
                answer = service.post("/requests", json={"request_type": "console", "user_id": "pulse"})
                assert answer.status_code == 200

        wait_until(lambda: submit(1) or counted() > 0, 30, "the reader following the decisions topic")
        before = counted()
        submit(10)
        decided = time.monotonic()
        wait_until(lambda: counted() >= before + 10, 2.0, "the new decisions on the overview", interval=0.1)
        assert time.monotonic() - decided < 2.0
        series = lambda: analyst.get("/console/data/overview.json").json()["decisions"]  # noqa: E731
        assert len(series()["t"]) == 3600
        wait_until(lambda: sum(series()["allow"]) >= before + 10, 3.0, "the chart's data (whole seconds only)")


def test_static_files_have_their_content_types_and_the_csp(stack):
    with browser(stack) as http:
        for name, kind in (("htmx.min.js", "text/javascript"), ("uPlot.iife.min.js", "text/javascript"),
                           ("console.js", "text/javascript"), ("console.css", "text/css")):
            answer = http.get(f"/console/static/{name}")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind), name
            assert "Content-Security-Policy" in answer.headers
        assert not any(p.startswith("/console") for p in http.get("/openapi.json").json()["paths"])
