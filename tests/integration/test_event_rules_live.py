"""The request stream's limits as descriptor rules on the real broker: a rules file for the domain
``ratewarden``, loaded with ``ratewarden limits load`` while a worker runs, decides the stream's
requests live (no restart); a record set at run time stands above it; a file the stream cannot take
is refused whole and changes nothing; unloading the domain brings the default back."""

import pytest

from ratewarden.control import delete_limit, set_limit
from schemas.limits import RateLimit
from tests.support.cli import ratewarden
from tests.support.probe import Probe, verdicts

pytestmark = pytest.mark.kafka

RULES = """\
domain: ratewarden
descriptors:
  - key: user_id                  # every user, each counted apart
    rate_limit: {unit: minute, requests_per_unit: 4}
    descriptors:
      - key: request_type
        value: login
        rate_limit: {unit: minute, requests_per_unit: 1}
  - key: user_id
    value: vip-*
    rate_limit: {unit: minute, requests_per_unit: 6, algorithm: sliding}
---
domain: edge                      # another domain in the same file: the rate limit service's
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 1}
"""
BAD = RULES.replace("key: request_type", "key: route")  # line 6: the stream has no "route"
ALLOWED = ("allow", "within_limit")


def test_a_rules_file_for_the_stream_decides_its_requests_live(make_core_pipeline, tmp_path):
    pipeline = make_core_pipeline(default_limit=100)
    settings = pipeline.settings
    pipeline.start_worker()
    probe = Probe(pipeline)
    assert probe.burst("alice", 1)[0].limit == 100

    good, bad = tmp_path / "stream.yaml", tmp_path / "bad.yaml"
    good.write_text(RULES)
    bad.write_text(BAD)
    loaded = ratewarden(settings, "limits", "load", str(good))
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert "ratewarden, edge" in loaded.stdout

    # the key-only rule is every user's limit, the typed rule under it every user's logins
    probe.until("alice", 4)
    assert verdicts(probe.burst("alice", 6)) == [ALLOWED] * 4 + [("throttle", "rate_limited")] * 2
    assert verdicts(probe.burst("alice", 2, "login")) == [ALLOWED, ("throttle", "rate_limited_type")]
    assert verdicts(probe.burst("bob", 5)) == [ALLOWED] * 4 + [("throttle", "rate_limited")]
    # a wildcard value: its own limit and algorithm, and no typed rule under it
    vip = probe.burst("vip-7", 8, "login")
    assert [d.verdict for d in vip] == ["allow"] * 6 + ["throttle"] * 2 and {d.limit for d in vip} == {6}

    # a record set at run time stands above the document; removing it brings the document's rule back
    set_limit(RateLimit(user_id="alice", limit=2, window=60.0), settings)
    probe.until("alice", 2)
    assert verdicts(probe.burst("alice", 3)) == [ALLOWED] * 2 + [("throttle", "rate_limited")]
    delete_limit("alice", settings=settings)
    probe.until("alice", 4)

    # a file the stream cannot take: every error by line, nothing applied
    refused = ratewarden(settings, "limits", "load", str(bad))
    assert refused.returncode == 1
    assert f"{bad}:6: the ratewarden domain takes the key 'request_type' here, not 'route'" in refused.stdout
    assert verdicts(probe.burst("alice", 2, "login")) == [ALLOWED, ("throttle", "rate_limited_type")]

    # listed with the other domains, and the per-user records as the rules they are; unloaded, the default is back
    set_limit(RateLimit(user_id="carol", limit=7, window=30.0, request_type="login"), settings)
    listed = ratewarden(settings, "limits", "rules")
    assert listed.returncode == 0 and "user_id.request_type=login" in listed.stdout
    assert [[cell.strip() for cell in line.split("│")[1:4]] for line in listed.stdout.splitlines()
            if "carol" in line] == [["ratewarden", "user_id=carol.request_type=login", "7/30 s (fixed)"]]
    assert ratewarden(settings, "limits", "unload", "ratewarden").returncode == 0
    probe.until("alice", 100)
    assert [d.verdict for d in probe.burst("alice", 6)] == ["allow"] * 6
