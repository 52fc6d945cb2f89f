"""Rules files: every error kind with its line, all errors at once, and valid files as RulesDocuments."""

import textwrap

import msgspec
import pytest

from agents.rules_file import RuleError, RulesFileError, load_rules
from schemas.descriptors import DescriptorRule, RateLimitSpec, ReplaceSpec, RulesDocument


def errors_of(text: str) -> list[RuleError]:
    with pytest.raises(RulesFileError) as caught:
        load_rules(textwrap.dedent(text).lstrip("\n"), source="rules.yaml")
    return caught.value.errors


def rule(body: str) -> str:
    """A one-domain file whose descriptor list holds ``body``; its first line is line 3."""
    return "domain: edge\ndescriptors:\n" + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "  ")


CASES = {
    "yaml syntax": ("domain: edge\ndescriptors:\n  - key: [a\n", 4, "YAML syntax error"),
    "document not a mapping": ("- domain: edge\n", 1, "a rules document must be a mapping"),
    "missing domain": ("descriptors: []\n", 1, "missing or empty 'domain'"),
    "empty domain": ("domain: ''\ndescriptors: []\n", 1, "missing or empty 'domain'"),
    "domain not a string": ("descriptors: []\ndomain: [a]\n", 2, "'domain' must be a string"),
    "duplicate domain": ("domain: a\n---\ndomain: a\n", 3, "duplicate domain 'a' (first at line 1)"),
    "descriptors not a list": ("domain: edge\ndescriptors:\n  key: a\n", 3, "'descriptors' must be a list"),
    "descriptor not a mapping": (rule("- just-a-key\n"), 3, "a descriptor must be a mapping"),
    "missing key": (rule("- value: x\n"), 3, "descriptor needs a non-empty 'key'"),
    "empty key": (rule("- key: ''\n"), 3, "descriptor needs a non-empty 'key'"),
    "key not a string": (rule("- key:\n    - a\n"), 4, "'key' must be a string"),
    "value not a string": (rule("- key: a\n  value: {x: 1}\n"), 4, "'value' must be a string"),
    "unknown descriptor field": (rule("- key: a\n  rate_limits: {}\n"), 4, "unknown field 'rate_limits'"),
    "unknown rate_limit field": (rule("- key: a\n  rate_limit:\n    unit: second\n    requests_per_unit: 1\n"
                                      "    bucket: 2\n"), 7, "unknown field 'bucket' in rate_limit"),
    "burst without gcra": (rule("- key: a\n  rate_limit:\n    unit: second\n    requests_per_unit: 1\n"
                                "    burst: 2\n"), 7, "'burst' applies to algorithm: gcra, not fixed"),
    "unknown replaces field": (rule("- key: a\n  unlimited: true\n  replaces:\n    - name: n\n      why: x\n"),
                               7, "unknown field 'why' in a replaces entry"),
    "unknown document field": ("domain: edge\nlimits: []\n", 2, "unknown field 'limits' in a rules document"),
    "duplicate field": (rule("- key: a\n  key: b\n"), 4, "duplicate field 'key'"),
    "duplicate descriptor": (rule("- key: a\n  value: x\n- key: a\n  value: x\n"), 5,
                             "duplicate descriptor 'a_x' (first at line 3)"),
    "rate_limit not a mapping": (rule("- key: a\n  rate_limit: 5\n"), 4, "rate_limit must be a mapping"),
    "missing unit": (rule("- key: a\n  rate_limit:\n    requests_per_unit: 1\n"), 5, "rate_limit needs a 'unit'"),
    "unknown unit": (rule("- key: a\n  rate_limit:\n    unit: minutes\n    requests_per_unit: 1\n"), 5,
                     "unknown unit 'minutes' (second, minute, hour, day, week, month, year)"),
    "missing requests_per_unit": (rule("- key: a\n  rate_limit:\n    unit: second\n"), 5,
                                  "rate_limit needs 'requests_per_unit'"),
    "negative requests_per_unit": (rule("- key: a\n  rate_limit:\n    unit: second\n    requests_per_unit: -1\n"),
                                   6, "must be from 0 to 4294967295, not -1"),
    "fractional requests_per_unit": (rule("- key: a\n  rate_limit: {unit: second, requests_per_unit: 1.5}\n"),
                                     4, "'requests_per_unit' must be a whole number"),
    "huge requests_per_unit": (rule("- key: a\n  rate_limit: {unit: second, requests_per_unit: 4294967296}\n"),
                               4, "not 4294967296"),
    "unknown algorithm": (rule("- key: a\n  rate_limit:\n    unit: second\n    requests_per_unit: 1\n"
                               "    algorithm: token\n"), 7, "unknown algorithm 'token' (fixed, sliding, gcra)"),
    "unlimited with rate_limit": (rule("- key: a\n  unlimited: true\n  rate_limit:\n    unit: second\n"
                                       "    requests_per_unit: 1\n"), 6, "unlimited: true together with a rate_limit"),
    "unit with reference unlimited": (rule("- key: a\n  rate_limit:\n    unlimited: true\n    unit: second\n"),
                                      6, "must not have a unit"),
    "replaces not a list": (rule("- key: a\n  unlimited: true\n  replaces: base\n"), 5, "'replaces' must be a list"),
    "replaces item without name": (rule("- key: a\n  unlimited: true\n  replaces:\n    - {}\n"), 6,
                                   "a replaces entry needs a non-empty 'name'"),
    "replaces itself": (rule("- key: a\n  rate_limit:\n    name: n\n    unit: second\n    requests_per_unit: 1\n"
                             "    replaces:\n      - name: n\n"), 9, "cannot replace itself"),
    "replaces without a limit": (rule("- key: a\n  replaces:\n    - name: n\n"), 5, "without a rate_limit"),
    "duplicate name": (rule("- key: a\n  rate_limit: {name: n, unit: second, requests_per_unit: 1}\n"
                            "- key: b\n  rate_limit: {name: n, unit: second, requests_per_unit: 1}\n"), 6,
                       "duplicate rate limit name 'n' (first at line 4)"),
    "shadow_mode not a boolean": (rule("- key: a\n  shadow_mode: maybe\n"), 4, "'shadow_mode' must be true or false"),
    "unlimited not a boolean": (rule("- key: a\n  unlimited: 1\n"), 4, "'unlimited' must be true or false"),
    "detailed_metric not a boolean": (rule("- key: a\n  detailed_metric: 'true'\n"), 4,
                                      "'detailed_metric' must be true or false"),
    "quota_mode": (rule("- key: a\n  quota_mode: true\n"), 4, "'quota_mode' is not supported by ratewarden"),
    "share_threshold": (rule("- key: a\n  value: x*\n  share_threshold: true\n"), 5,
                        "'share_threshold' is not supported by ratewarden"),
    "empty file": ("# nothing\n", 1, "no rules document"),
}


@pytest.mark.parametrize(("text", "line", "fragment"), CASES.values(), ids=CASES.keys())
def test_each_error_kind_is_reported_at_its_line(text, line, fragment):
    errors = errors_of(text)
    assert [(e.line, fragment in e.message) for e in errors] == [(line, True)], errors


def test_a_file_with_several_errors_reports_all_of_them_by_line():
    text = rule("""
        - key: a
          rate_limit: {unit: minutes, requests_per_unit: 1}
        - key: b
          quota_mode: true
        - value: x
        """)
    with pytest.raises(RulesFileError) as caught:
        load_rules(text, source="edge.yaml")
    assert [e.line for e in caught.value.errors] == [4, 6, 7]
    message = str(caught.value)
    assert "edge.yaml: line 4: unknown unit 'minutes'" in message
    assert "line 6: 'quota_mode'" in message and "line 7: descriptor needs" in message
    assert isinstance(caught.value, ValueError)


VALID = """
# as envoyproxy/ratelimit writes it
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: Minute, requests_per_unit: 0}
  - key: user_id
    value: 200
    shadow_mode: yes
    descriptors:
      - key: request_type
        rate_limit:
          name: per_type
          unit: hour
          requests_per_unit: 10
          algorithm: sliding
  - key: route
    value: /upload
    value_to_metric: true
    rate_limit:
      unit: second
      requests_per_unit: 50
      replaces:
        - name: per_type
  - key: health
    rate_limit: {unlimited: true}
  - key: static
"""


def test_a_valid_file_becomes_rules_documents():
    (document,) = load_rules(VALID)
    assert document == RulesDocument(domain="edge", descriptors=[
        DescriptorRule(key="remote_address", rate_limit=RateLimitSpec(unit="minute", requests_per_unit=0)),
        DescriptorRule(key="user_id", value="200", shadow_mode=True, descriptors=[
            DescriptorRule(key="request_type", rate_limit=RateLimitSpec(
                unit="hour", requests_per_unit=10, name="per_type", algorithm="sliding"))]),
        DescriptorRule(key="route", value="/upload", rate_limit=RateLimitSpec(unit="second", requests_per_unit=50),
                       replaces=[ReplaceSpec(name="per_type")]),
        DescriptorRule(key="health", unlimited=True),
        DescriptorRule(key="static"),
    ])
    assert msgspec.json.decode(msgspec.json.encode(document), type=RulesDocument) == document


def test_several_documents_make_several_domains():
    text = "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: 1}\n---\ndomain: b\n---\n"
    documents = load_rules(text)
    assert [d.domain for d in documents] == ["a", "b"]
    assert documents[0].descriptors[0].rate_limit.unit == "day" and documents[1].descriptors == []


def test_every_rules_file_shown_in_the_docs_loads():
    """The README's and docs/rls.md's rules examples are files an operator copies: each must load as shown."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    blocks = [block for name in ("README.md", "docs/rls.md")
              for block in re.findall(r"```yaml\n(.*?)```", (root / name).read_text(), re.S)
              if re.search(r"^domain:", block, re.M)]
    assert len(blocks) >= 4
    for block in blocks:
        assert load_rules(block), block
