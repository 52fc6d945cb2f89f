"""The gateway's rate limit engine without a broker: hits published per limited descriptor, answers mapped,
descriptors without a limit answered at once, the failure mode when no answer comes."""

import asyncio

from agents.descriptor_counting import count_hit
from agents.rules_file import load_rules
from agents.descriptor_rules import RuleBook
from ratewarden.rls.engine import RlsEngine
from ratewarden.rls.results import MAX_REMAINING, Status
from streams.settings import Settings

RULES = """\
domain: edge
descriptors:
  - key: ip
    rate_limit: {unit: hour, requests_per_unit: 2, name: per_ip}
  - key: health
    rate_limit: {unlimited: true}
"""
TS = 1_733_001_600.0


class Desk:
    """Stands for the outbox and the waiter: counts each published hit at once (or never, when ``silent``)."""

    def __init__(self, silent: bool = False) -> None:
        self.silent, self.hits, self.counters, self.expected = silent, [], {}, {}

    def expect(self, request_id, waiting, index) -> None:
        self.expected[request_id] = (waiting, index)

    def forget(self, request_id) -> None:
        self.expected.pop(request_id, None)

    def put(self, hit, waiting, index) -> None:
        self.hits.append(hit)
        if not self.silent:
            answer, self.counters[hit.counter] = count_hit(self.counters.get(hit.counter), hit, hit.ts)
            waiting.land(index, answer)


def engine(fail_mode: str = "open", silent: bool = False) -> tuple[RlsEngine, Desk]:
    rules = RuleBook()
    for document in load_rules(RULES):
        rules.put(document.domain, document)
    settings = Settings(kafka_bootstrap_servers="unused:9092", rls_fail_mode=fail_mode, rls_decision_timeout=0.05)
    ids = iter(range(1_000))
    rls = RlsEngine(settings, rules, clock=lambda: TS, new_id=lambda: f"c{next(ids)}")
    desk = Desk(silent)
    rls.waiter, rls.outbox = desk, desk
    return rls, desk


def test_limited_descriptors_become_hits_and_their_answers_statuses():
    rls, desk = engine()
    calls = [asyncio.run(rls.should_rate_limit("edge", [[("ip", "a")], [("health", "x")], [("nope", "y")]], 1))
             for _ in range(3)]
    assert [h.request_id for h in desk.hits] == ["c0/0", "c1/0", "c2/0"], "only the limited descriptor is published"
    assert {(h.domain, h.limit, h.window, h.name, h.hits, h.ts) for h in desk.hits} == {("edge", 2, 3600.0, "per_ip", 1, TS)}
    assert [c.overall for c in calls] == ["OK", "OK", "OVER_LIMIT"]
    first = calls[0].statuses
    assert first[0] == Status("OK", 2, "hour", "per_ip", 1, 3600 - int(TS) % 3600, True, 1)
    assert first[1] == Status("OK", remaining=MAX_REMAINING) and first[2] == Status("OK")
    assert calls[2].statuses[0].code == "OVER_LIMIT" and not desk.expected, "every expectation forgotten"


def test_each_descriptor_may_bring_its_own_hits():
    rls, desk = engine()
    result = asyncio.run(rls.should_rate_limit("edge", [[("ip", "a")], [("ip", "b")]], [0, 2]))
    assert [h.hits for h in desk.hits] == [0, 2]
    assert [(s.code, s.remaining) for s in result.statuses] == [("OK", 2), ("OK", 0)]


def test_no_answer_in_time_is_answered_by_the_failure_mode_and_marked_undecided():
    for mode, code in (("open", "OK"), ("closed", "OVER_LIMIT")):
        rls, desk = engine(mode, silent=True)
        result = asyncio.run(rls.should_rate_limit("edge", [[("ip", "a")], [("health", "x")]], 1))
        assert result.overall == code
        assert result.statuses[0] == Status(code, 2, "hour", "per_ip", 0, None, False)
        assert not desk.expected


def test_an_unknown_domain_is_answered_ok_without_limits_and_counted():
    rls, desk = engine()
    result = asyncio.run(rls.should_rate_limit("other", [[("ip", "a")]], 1))
    assert result.overall == "OK" and result.statuses == [Status("OK")] and not desk.hits
    assert rls.unknown_domains == 1
