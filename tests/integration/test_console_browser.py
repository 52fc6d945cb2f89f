"""The web console in a real browser (headless Chromium) on the real broker, worker and gateway.

A simulated trace with labelled attacks, ending now, is replayed through Kafka; the analytics flag
and ban the flood. An analyst signs in, finds the flood address on the flags page, opens its page
and sees the flood rule and its evidence; an admin lifts its ban with the page's form, after which
that address's next request through the API is allowed. The overview's decision count follows new
decisions without a reload (within 2 s). Every page visited is saved as a PNG screenshot in
``var/test-artifacts/console/`` (README, "Console").
"""

import math
import time

import httpx
import pytest

from ratewarden.gateway.server import GatewayThread
from ratewarden.gateway.testing import wait_until as wait_for
from ratewarden.gateway.users import create_user
from ratewarden.simulate import simulate
from schemas.events import RequestEvent
from schemas.flags import AbuseReport
from tests.integration.test_analytics_bans import bans
from tests.integration.test_analytics_pipeline import decode_all, wait_until
from tests.support.browser import artifacts_dir, assert_png, headless_chromium

pytestmark = pytest.mark.kafka

MINUTES, USERS, SEED = 5, 120, 7
FLOOD_RULE = "flood"
#: Acceptance: the overview's live count shows new decisions within this many seconds, no reload.
LIVE_BOUND = 2.0


@pytest.fixture
def attacked(make_pipeline):
    """(gateway URL, keys by role, the banned flood address, the simulator's labels) after a simulated
    attack ending now.

    Bans last an hour of event time, so the flood's ban is in force for requests stamped now.
    """
    window = 60.0  # the analytics' default window
    sim = simulate(minutes=MINUTES, users=USERS, seed=SEED, start_ts=time.time() - MINUTES * 60 - 2 * window - 5)
    pipeline = make_pipeline(default_limit=100, ban_ttl=3_600.0, gateway_decision_timeout=10.0,
                             analytics_window=window, allowlist_cidrs=",".join(sim.labels["allowlist"]))
    s = pipeline.settings
    pipeline.start_worker()
    pipeline.replay(sim.events, timeout=180.0)
    # One request two windows later (still in the past) moves event time past the trace, so its last
    # window closes. The analytics are done when that window's report is out: no flag, so no ban,
    # comes after that to undo the unban below.
    last_ts = sim.events[-1].ts
    pipeline.replay([RequestEvent("tick", "tick-user", "198.51.100.250", "read", last_ts + 2 * window)])
    last_end = (math.floor(last_ts / window) + 1) * window
    wait_until(pipeline, lambda: [r for _, r in decode_all(pipeline.read_topic(s.abuse_reports_topic), AbuseReport)],
               lambda got: any(r.window_end >= last_end for r in got), timeout=90)
    banned = {b.subject for b in bans(pipeline) if b.ttl}
    floods = [ip for ip in sim.labels["kinds"]["flood"] if ip in banned]
    assert floods, f"no flood address banned: floods {sim.labels['kinds']['flood']}, bans {sorted(banned)}"
    keys = {role: create_user(f"{role}-1", role, s)[1] for role in ("analyst", "admin", "service")}
    with GatewayThread(s) as gateway:
        yield gateway.url, keys, floods[0], sim.labels


def probe(url: str, key: str, ip: str, user: str = "probe-user") -> httpx.Response:
    """One request of ``user`` from ``ip`` through the API, decided now (a service key may name both)."""
    return httpx.post(f"{url}/requests", json={"request_type": "read", "user_id": user, "ip": ip},
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)


def decided(answer: httpx.Response, status: int) -> bool:
    return answer.status_code == status and not answer.json().get("fail_open")


class Visit:
    """The browser's steps: pages by their nav links, a title check, and a screenshot of each page."""

    def __init__(self, driver, url: str, out) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.url, self.out, self.by, self.wait = driver, url, out, By, WebDriverWait
        self.shots = []

    def css(self, selector: str):
        return self.driver.find_elements(self.by.CSS_SELECTOR, selector)

    def until(self, condition, timeout: float = 15.0, what: str = ""):
        """Poll ``condition``; an element the page's live parts replaced meanwhile is looked up again."""
        from selenium.common.exceptions import StaleElementReferenceException

        return self.wait(self.driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: condition(), what)

    def page(self, name: str, shot: str) -> None:
        """Wait for the page called ``name`` (its title and heading), then screenshot it as ``shot``.png."""
        self.until(lambda: self.driver.title.startswith(name), what=f"title {name!r}, got {self.driver.title!r}")
        assert self.css("h1")[0].text == name
        self.driver.set_window_size(1280, 800)  # measured at the smallest size: the page's own height
        height, chrome = self.driver.execute_script(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
        self.driver.set_window_size(1280, max(800, min(int(height) + int(chrome), 2400)))  # the whole page, bounded
        path = self.out / f"console_{shot}.png"
        assert self.driver.save_screenshot(str(path))
        self.shots.append(path)

    def sign_in(self, key: str) -> None:
        self.driver.get(f"{self.url}/console/login")
        self.css("#login-form #key")[0].send_keys(key)
        self.css("#login-form #login")[0].click()
        self.until(lambda: self.driver.current_url == f"{self.url}/console/", what="the overview after signing in")

    def sign_out(self) -> None:
        self.css("form#logout-form button")[0].click()
        self.until(lambda: self.driver.current_url.endswith("/console/login"), what="the login page")

    def nav(self, key: str) -> None:
        self.css(f"a#nav-{key}")[0].click()

    def total(self) -> int:
        """The overview's live decision count (-1 until it shows a number). The live part is swapped every
        second: a count element replaced between finding and reading it is found again."""
        return self.until(lambda: (self._total(),), what="the overview's live decision count")[0]

    def _total(self) -> int:
        text = self.css("#live #decisions-total")[0].text.replace(",", "")
        return int(text) if text.isdigit() else -1


def live_count_follows(visit: Visit, url: str, key: str, ip: str) -> float:
    """Seconds from new decisions (answered by the API) to the overview showing them, without a reload."""
    page = visit.driver.execute_script("return window.performance.timeOrigin")

    def shows_one_more() -> bool:  # the reader starts at the topic's end when the overview is first shown
        before = visit.total()
        assert probe(url, key, ip, "live-user").status_code == 200
        try:
            visit.until(lambda: visit.total() > before, LIVE_BOUND)
            return True
        except Exception:  # noqa: BLE001 - TimeoutException: the reader was not following yet; again
            return False

    wait_for(shows_one_more, 60, "the overview's decision count following new decisions", interval=0)
    before = visit.total()
    answers = [probe(url, key, ip, "live-user") for _ in range(5)]
    assert all(decided(a, 200) for a in answers), [a.text for a in answers]
    decided_at = time.monotonic()  # every answer carries its decision: all five are decided now
    visit.until(lambda: visit.total() >= before + 5, LIVE_BOUND,
                f"#decisions-total from {before} to {before + 5} within {LIVE_BOUND} s without a reload")
    assert visit.driver.execute_script("return window.performance.timeOrigin") == page, "the page was reloaded"
    return time.monotonic() - decided_at


def test_analyst_finds_the_flood_and_admin_lifts_its_ban_in_the_browser(attacked):
    url, keys, flood, labels = attacked
    [network] = labels["kinds"]["ipv6_rotation"]  # a /64 whose every request came from a new address
    out = artifacts_dir("console")
    with headless_chromium() as driver:
        visit = Visit(driver, url, out)
        visit.sign_in(keys["analyst"])
        lag = live_count_follows(visit, url, keys["service"], "198.51.100.200")
        print(f"[console] the overview showed 5 new decisions {lag:.2f} s after they were decided")
        visit.page("Overview", "overview")

        visit.nav("flags")
        visit.page("Flags", "flags")
        rows = {row.find_element(visit.by.CSS_SELECTOR, "td.subject > a").text: row for row in visit.css("table#flags tr.flag")}
        assert flood in rows, f"{flood} not among the flagged {sorted(rows)}"
        assert FLOOD_RULE in rows[flood].find_element(visit.by.CSS_SELECTOR, "td.rules").text
        assert float(rows[flood].find_element(visit.by.CSS_SELECTOR, "td.score").text) > 0
        assert rows[flood].find_element(visit.by.CSS_SELECTOR, "td.severity").text in ("medium", "high")
        rows[flood].find_element(visit.by.CSS_SELECTOR, "td.subject > a").click()
        visit.page(f"IP {flood}", "ip")
        assert any(FLOOD_RULE in rule.text for rule in visit.css("#rules .rule")), [r.text for r in visit.css("#rules .rule")]
        evidence = visit.css("#evidence")[0].text
        assert "requests" in evidence and "score" in evidence, evidence
        assert [row.text.split()[0] for row in visit.css("table#bans tr.ban")] == [flood]
        assert not visit.css("form#unban"), "an analyst is shown the admin's forms"
        visit.sign_out()

        visit.sign_in(keys["admin"])
        driver.get(f"{url}/console/ip/{flood}")
        visit.page(f"IP {flood}", "ip_admin")
        # Banned: blocked until the ban is lifted (the limiter has long had the ban; bounded all the same).
        blocked = wait_for(lambda: (a := probe(url, keys["service"], flood)).status_code != 200 and a, 30,
                           "the ban enforced by the limiter")
        assert decided(blocked, 403) and blocked.json()["reason"] == "ip_blocked", blocked.text
        visit.css("form#unban button")[0].click()
        visit.until(lambda: not visit.css("table#bans tr.ban") and visit.css("table#bans tr.empty"),
                    what="the ban gone from the IP page")
        assert driver.current_url == f"{url}/console/ip/{flood}"
        # The limiter's table gets the lifted ban through the blocklist topic: a bounded wait for it.
        answer = wait_for(lambda: (a := probe(url, keys["service"], flood)).status_code != 403 and a, 30,
                          "the lifted ban reaching the limiter")
        assert decided(answer, 200) and answer.json()["status"] == "ok", answer.text

        driver.get(f"{url}/console/network/{network}")
        visit.page(f"Network {network}", "network")
        assert visit.css("#rules .rule") and visit.css("#evidence [data-feature=addresses]")

        visit.nav("bans")
        visit.page("Bans", "bans")
        rows = visit.css("table#bans tr.ban")
        assert rows and flood not in [row.get_attribute("data-subject") for row in rows]  # the other bans stay
        assert all(row.find_elements(visit.by.CSS_SELECTOR, "form.lift") for row in rows)
        visit.nav("limits")
        visit.page("Limits", "limits")
        assert visit.css("table#limits")
        driver.get(f"{url}/console/users/probe-user")
        visit.page("User probe-user", "user")
        verdicts = [row.get_attribute("class") for row in visit.css("table#history tr.request")]
        assert any("verdict-block" in v for v in verdicts) and any("verdict-allow" in v for v in verdicts), verdicts

    assert [p.name for p in visit.shots] == [f"console_{n}.png" for n in
                                             ("overview", "flags", "ip", "ip_admin", "network", "bans", "limits", "user")]
    for path in visit.shots:
        assert_png(path)
