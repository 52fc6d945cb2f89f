"""The runtime allow-list on the real broker: a worker, the gateway, flags injected on ``ip-flags``.

An address allow-listed through ``PUT /allowlist/{address}`` is not banned for its next flag; removed
(``DELETE``), its next flag bans it; the console's ``form#allow`` (signed in, with its CSRF token)
allow-lists it again and lifts that automatic ban, and its next flag bans nothing. Each flag of the
address is followed, on the same ``ip-flags`` partition, by a flag of a fresh control address: the
blocklist agent handles a partition in order, so once the control's ban is written the address's
flag has been judged.
"""

from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from agents.ban_horizon import is_horizon_key
from ratewarden.client import read_topic_records
from ratewarden.gateway.testing import GatewayStack, wait_until
from schemas.flags import AutoBan
from streams.kafka_config import kafka_python_options
from tests.integration.test_analytics_bans import T0, flag
from tests.integration.test_console_access import CSRF, sign_in

pytestmark = pytest.mark.kafka

IP = "203.0.113.50"


def publish(settings, flags) -> None:
    """Flags on partition 0 of ``ip-flags``, in this order."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                             **kafka_python_options(settings))
    for f in flags:
        producer.send(settings.ip_flags_topic, key=f.ip.encode(), value=msgspec.json.encode(f), partition=0)
    producer.flush()
    producer.close()


def bans_of(settings, subject: str) -> list[AutoBan]:
    """Every automatic ban of ``subject`` ever written to the blocklist topic (tombstoned ones too)."""
    decode = msgspec.json.Decoder(AutoBan).decode
    records = read_topic_records(settings, settings.blocklist_topic)
    return [ban for r in records if r.value is not None and not is_horizon_key(r.key.decode())
            and (ban := decode(r.value)).subject == subject]


def judged(stack, end: float, control: str, subject_flagged: bool = True) -> None:
    """Publish a flag of :data:`IP` (unless not ``subject_flagged``) and then one of ``control`` for the
    window ending at ``end``; return once the control's ban is on the topic."""
    publish(stack.settings, ([flag(IP, end)] if subject_flagged else []) + [flag(control, end)])
    wait_until(lambda: bans_of(stack.settings, control), 60, f"the ban of the control {control}", interval=0.3)


def worker_logged(stack, text: str, times: int = 1) -> None:
    """Until the worker's log has ``text`` ``times`` times (its allow-list logs every change it applies)."""
    log = Path(stack.tmp) / "w1.log"
    wait_until(lambda: log.read_text(errors="replace").count(text) >= times, 30, f"the worker applying {text!r}",
               interval=0.2)


def test_the_allowlist_applies_live_through_the_api_and_the_console_form(kafka_bootstrap, tmp_path):
    with GatewayStack(kafka_bootstrap, tmp_path, ban_ttl=300.0) as stack, stack.client("admin") as api:
        put = api.put(f"/allowlist/{IP}", json={"reason": "office"})
        assert put.status_code == 200 and put.json()["network"] == f"{IP}/32", put.text
        worker_logged(stack, f"allow-list: added {IP}/32")
        first = T0 + 60
        judged(stack, first, "198.51.100.1")
        assert bans_of(stack.settings, IP) == []  # allow-listed: reported, not banned

        assert api.delete(f"/allowlist/{IP}").status_code == 204
        worker_logged(stack, f"allow-list: removed {IP}/32")
        second = first + 600
        judged(stack, second, "198.51.100.2")
        [ban] = bans_of(stack.settings, IP)
        assert (ban.start, ban.reason) == (second, "auto:flood")
        assert any(e["subject"] == IP for e in api.get("/blocklist").json()["entries"])

        admin = sign_in(stack, "admin")
        with closing(admin):
            page = admin.get(f"/console/ip/{IP}")
            assert 'id="allow"' in page.text and 'id="allowlisted"' not in page.text
            done = admin.post(f"/console/ip/{IP}/allow", data={"csrf": CSRF.search(page.text).group(1),
                                                               "reason": "vpn exit"})
            assert done.status_code == 303 and done.headers["location"] == f"/console/ip/{IP}", done.text
            assert 'id="allowlisted"' in admin.get(f"/console/ip/{IP}").text
        assert not any(e["subject"] == IP for e in api.get("/blocklist").json()["entries"])  # the ban is lifted
        [entry] = [e for e in api.get("/allowlist").json()["entries"] if e["network"] == f"{IP}/32"]
        assert (entry["reason"], entry["added_by"], entry["static"]) == ("vpn exit", "admin-1", False)
        worker_logged(stack, f"allow-list: added {IP}/32", times=2)
        judged(stack, second + 1_000, "198.51.100.3")  # long after the lifted ban: a new offence if banned
        assert len(bans_of(stack.settings, IP)) == 1  # still only the ban the console lifted
