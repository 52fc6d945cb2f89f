"""Load a descriptor rules file (envoyproxy/ratelimit's YAML format) into validated :class:`RulesDocument` s.

The file is checked as a whole before anything is published: every mistake is reported with its
line (from PyYAML's node marks), so an operator fixes a file in one go, and a file with any error
yields nothing — a half-loaded domain would limit some routes and silently pass others.

Compatibility with the reference: ``---`` separates several domains (the reference reads one per
file); any scalar ``key``/``value`` is taken as its text, as Go's yaml.v2 does (``value: 200`` is
"200"); units are case-insensitive; ``unlimited`` and ``replaces`` may stand in ``rate_limit`` (the
reference's place) or on the descriptor (the place :class:`DescriptorRule` keeps them). Stricter than
the reference: missing ``requests_per_unit`` (the reference takes 0), duplicate fields, and reference
features that would change counting here without effect (``quota_mode``, ``share_threshold``).
"""

from typing import Any, NamedTuple

import msgspec
import yaml

from agents.event_rules import EVENTS_DOMAIN, event_rule_errors
from schemas.descriptors import UNIT_SECONDS, RulesDocument

__all__ = ["RuleError", "RulesFileError", "load_rules"]

_STR, _INT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "bool", "null"))
_MAX_RPU = 4_294_967_295
_DOCUMENT = ("domain", "descriptors")
_DESCRIPTOR = ("key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric", "value_to_metric",
               "unlimited", "replaces", "quota_mode", "share_threshold")
_RATE_LIMIT = ("unit", "requests_per_unit", "name", "algorithm", "burst", "unlimited", "replaces")
_UNSUPPORTED = ("quota_mode", "share_threshold")  # accepted only as false
_FLAGS = ("shadow_mode", "detailed_metric", "unlimited", "value_to_metric")  # value_to_metric: metrics only, dropped
_UNITS = ", ".join(UNIT_SECONDS)
_ALGORITHMS = ("fixed", "sliding", "gcra")


class RuleError(NamedTuple):
    line: int  # 1-based, in the YAML text
    message: str


class RulesFileError(ValueError):
    """A rules file with errors; ``errors`` holds all of them, by line."""

    def __init__(self, errors: list[RuleError], source: str = "<rules>") -> None:
        self.errors = sorted(errors, key=lambda e: e.line)
        self.source = source
        super().__init__("\n".join(f"{source}: line {e.line}: {e.message}" for e in self.errors))


class _Checker:
    """One pass over the composed YAML nodes, collecting errors instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[RuleError] = []
        self.names: dict[str, int] = {}  # rate limit name -> line, within the current domain
        self.construct = yaml.constructor.SafeConstructor().construct_object

    def error(self, node: yaml.Node, message: str) -> None:
        self.errors.append(RuleError(node.start_mark.line + 1, message))

    def fields(self, node: yaml.Node, allowed: tuple[str, ...], what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return {}
        found: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                self.error(key, f"field names in {what} must be strings")
            elif key.value not in allowed:
                self.error(key, f"unknown field '{key.value}' in {what} ({', '.join(allowed)})")
            elif key.value in found:
                self.error(key, f"duplicate field '{key.value}' in {what}")
            else:
                found[key.value] = value
        return found

    def text(self, node: yaml.Node | None, field: str) -> str | None:
        """Any scalar as its text (null as empty), like yaml.v2 decoding into a Go string."""
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"'{field}' must be a string")
            return None
        return "" if node.tag == _NULL else node.value

    def flag(self, fields: dict[str, yaml.Node], field: str) -> bool:
        node = fields.get(field)
        if node is None:
            return False
        if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL:
            return bool(self.construct(node))
        self.error(node, f"'{field}' must be true or false")
        return False

    def items(self, node: yaml.Node | None, field: str) -> list[yaml.Node]:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
            return []
        if isinstance(node, yaml.SequenceNode):
            return node.value
        self.error(node, f"'{field}' must be a list")
        return []

    def document(self, node: yaml.Node, domains: dict[str, int]) -> dict[str, Any]:
        self.names = {}
        fields = self.fields(node, _DOCUMENT, "a rules document")
        domain = self.text(fields.get("domain"), "domain")
        if domain == "" or ("domain" not in fields and isinstance(node, yaml.MappingNode)):
            self.error(fields.get("domain", node), "missing or empty 'domain'")
        elif domain and domain in domains:
            self.error(fields["domain"], f"duplicate domain '{domain}' (first at line {domains[domain]})")
        elif domain and len(domain) > 256:
            self.error(fields["domain"], "domain longer than 256 characters")
        elif domain:
            domains[domain] = fields["domain"].start_mark.line + 1
        descriptors = self.descriptors(fields.get("descriptors"), "descriptors")
        if domain == EVENTS_DOMAIN:  # the request stream's own rules: only what it can take
            self.errors.extend(RuleError(line, message) for line, message in event_rule_errors(descriptors))
        return {"domain": domain, "descriptors": descriptors}

    def descriptors(self, node: yaml.Node | None, field: str) -> list[dict[str, Any]]:
        seen: dict[str, int] = {}  # composite key -> line, at this level
        rules = []
        for item in self.items(node, field):
            rule = self.descriptor(item)
            if rule.get("key"):
                composite = f"{rule['key']}_{rule['value']}" if rule.get("value") else rule["key"]
                if composite in seen:
                    self.error(item, f"duplicate descriptor '{composite}' (first at line {seen[composite]})")
                seen.setdefault(composite, item.start_mark.line + 1)
            rules.append(rule)
        return rules

    def descriptor(self, node: yaml.Node) -> dict[str, Any]:
        fields = self.fields(node, _DESCRIPTOR, "a descriptor")
        rule: dict[str, Any] = {"key": self.text(fields.get("key"), "key"),
                                "value": self.text(fields.get("value"), "value") or None,
                                "line": node.start_mark.line + 1}  # dropped by _without_lines
        if rule["key"] == "" or ("key" not in fields and isinstance(node, yaml.MappingNode)):
            self.error(fields.get("key", node), "descriptor needs a non-empty 'key'")
        flags = {field: self.flag(fields, field) for field in _FLAGS + _UNSUPPORTED}
        for field in _UNSUPPORTED:
            if flags[field]:
                self.error(fields[field], f"'{field}' is not supported by ratewarden")
        rule.update(shadow_mode=flags["shadow_mode"], detailed_metric=flags["detailed_metric"],
                    unlimited=flags["unlimited"], replaces=self.replaces(fields.get("replaces"), None),
                    descriptors=self.descriptors(fields.get("descriptors"), "descriptors"))
        if "rate_limit" in fields:
            self.rate_limit(fields["rate_limit"], rule, "replaces" in fields)
        if rule["replaces"] and "rate_limit" not in fields and not rule["unlimited"]:
            self.error(fields["replaces"], "'replaces' without a rate_limit or unlimited: true")
        return rule

    def rate_limit(self, node: yaml.Node, rule: dict[str, Any], replaces_given: bool) -> None:
        fields = self.fields(node, _RATE_LIMIT, "rate_limit")
        if not isinstance(node, yaml.MappingNode):
            return
        if rule["unlimited"]:
            self.error(node, "unlimited: true together with a rate_limit")
        name = self.text(fields.get("name"), "name") or None
        if name in self.names:
            self.error(fields["name"], f"duplicate rate limit name '{name}' (first at line {self.names[name]})")
        elif name:
            self.names[name] = fields["name"].start_mark.line + 1
        if "replaces" in fields:
            if replaces_given:
                self.error(fields["replaces"], "'replaces' both in rate_limit and on the descriptor")
            rule["replaces"] = self.replaces(fields["replaces"], name)
        unit = self.text(fields.get("unit"), "unit")
        rpu = self.count(fields.get("requests_per_unit"))
        algorithm = self.text(fields.get("algorithm"), "algorithm") or "fixed"
        if algorithm not in _ALGORITHMS:
            self.error(fields["algorithm"], f"unknown algorithm '{algorithm}' ({', '.join(_ALGORITHMS)})")
        if self.flag(fields, "unlimited"):  # the reference's form of unlimited
            rule["unlimited"] = True
            if unit is not None:
                self.error(fields["unit"], "a rate_limit with unlimited: true must not have a unit")
            return
        if unit is None:
            self.error(node, "rate_limit needs a 'unit'")
        elif unit.lower() not in UNIT_SECONDS:
            self.error(fields["unit"], f"unknown unit '{unit}' ({_UNITS})")
        if "requests_per_unit" not in fields:
            self.error(node, "rate_limit needs 'requests_per_unit'")
        burst = None
        if "burst" in fields:
            burst = self.count(fields["burst"], "burst")
            if algorithm != "gcra":
                self.error(fields["burst"], f"'burst' applies to algorithm: gcra, not {algorithm}")
        rule["rate_limit"] = {"unit": (unit or "").lower(), "requests_per_unit": rpu, "name": name,
                              "algorithm": algorithm, "burst": burst}

    def count(self, node: yaml.Node | None, field: str = "requests_per_unit") -> int:
        if node is None:
            return 0
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _INT):
            self.error(node, f"'{field}' must be a whole number")
            return 0
        value = self.construct(node)
        if not 0 <= value <= _MAX_RPU:
            self.error(node, f"'{field}' must be from 0 to {_MAX_RPU}, not {value}")
        return value

    def replaces(self, node: yaml.Node | None, own_name: str | None) -> list[dict[str, str]]:
        out = []
        for item in self.items(node, "replaces"):
            name = self.text(self.fields(item, ("name",), "a replaces entry").get("name"), "name")
            if not name and isinstance(item, yaml.MappingNode):
                self.error(item, "a replaces entry needs a non-empty 'name'")
            elif name and name == own_name:
                self.error(item, f"a rate limit cannot replace itself ('{name}')")
            elif name:
                out.append({"name": name})
        return out


def load_rules(text: str, source: str = "<rules>") -> list[RulesDocument]:
    """Every domain of a rules file, validated; :class:`RulesFileError` with all errors, else nothing."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise RulesFileError([RuleError(line, f"YAML syntax error: {exc.problem}")], source) from exc
    except yaml.YAMLError as exc:
        raise RulesFileError([RuleError(1, f"YAML error: {exc}")], source) from exc
    nodes = [n for n in nodes if not (isinstance(n, yaml.ScalarNode) and n.tag == _NULL)]
    checker, domains = _Checker(), {}
    documents = [checker.document(node, domains) for node in nodes]
    if not nodes:
        checker.errors.append(RuleError(1, "the file holds no rules document"))
    if checker.errors:
        raise RulesFileError(checker.errors, source)
    return [msgspec.convert(_without_lines(document), RulesDocument) for document in documents]


def _without_lines(value: Any) -> Any:
    """``value`` (the checker's dicts and lists) without the ``line`` each descriptor carried for errors."""
    if isinstance(value, dict):
        return {k: _without_lines(v) for k, v in value.items() if k != "line"}
    if isinstance(value, list):
        return [_without_lines(v) for v in value]
    return value
