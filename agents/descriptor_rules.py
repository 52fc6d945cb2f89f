"""Descriptor rules of every domain, and which limit each descriptor of a ``ShouldRateLimit`` call counts against.

Matching mirrors envoyproxy/ratelimit (``GetLimit`` and ``constructLimitsToCheck``), so a rules file
moved from the reference behaves the same here:

* Rules are stored per level under their composite key, ``key`` or ``key_value``. A descriptor entry
  ``(k, v)`` first looks up ``k_v``; failing that, the first wildcard rule of the level (a composite
  key ending in ``*``, in file order) whose prefix starts ``k_v``; failing that, the key-only rule ``k``.
* A descriptor matches only if every entry is consumed walking down the tree and the node reached by
  the last entry has a ``rate_limit`` (or is ``unlimited``); a shorter or longer descriptor matches nothing.
* ``unlimited`` answers OK without counting; its ``replaces`` still apply. Then every matched limit
  whose ``name`` some matched limit of the same call lists in ``replaces`` is dropped.

The tree is built once in :meth:`RuleBook.put` (documents arrive rarely, on the limits topic), so
:meth:`RuleBook.resolve`, run for every call, is a few dict lookups per entry.
"""

import logging
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import msgspec

from schemas.descriptors import UNIT_SECONDS, DescriptorRule, RulesDocument

__all__ = ["MatchedLimit", "Resolved", "RuleBook", "RuleNode", "build_tree", "counter_key", "step",
           "UNLIMITED_REMAINING"]

logger = logging.getLogger(__name__)

#: What the reference reports as ``remaining`` for an unlimited descriptor (the largest uint32).
UNLIMITED_REMAINING = 4_294_967_295

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class MatchedLimit:
    domain: str
    rule: str  # the matched rule's path: composite keys (``key`` or ``key_value``) joined by "."
    requests_per_unit: int
    unit: str
    window: float
    name: str | None
    algorithm: str
    shadow: bool
    unlimited: bool
    replaces: tuple[str, ...]
    burst: int | None = None  # gcra only


class Resolved(NamedTuple):
    limit: MatchedLimit | None  # the limit to count against; None: nothing to count
    unlimited: bool  # the matched rule is ``unlimited: true``
    counter: str | None  # the counter key when ``limit`` is not None


_NOTHING = Resolved(None, False, None)
_UNLIMITED = Resolved(None, True, None)


def counter_key(domain: str, entries: Sequence[tuple[str, str]], window: float) -> str:
    """The counter of one descriptor: ``["<domain>",[["<key>","<value>"],...],<window>]`` as JSON text.

    Every entry goes in with its value, so a key-only rule counts each value apart (one counter per
    IP for ``remote_address``), as the reference does. JSON quoting makes the key unambiguous for
    any strings (no separator can be forged), and the window (seconds, as a float) makes a unit
    change start a fresh counter rather than carrying an hour's count into a minute's limit.
    """
    return _encode((domain, [(k, v) for k, v in entries], float(window))).decode()


class RuleNode:
    """One rule of the tree: children by composite key, wildcard children in file order, and its limit."""

    __slots__ = ("children", "wildcards", "limit")

    def __init__(self) -> None:
        self.children: dict[str, RuleNode] = {}
        self.wildcards: list[tuple[str, RuleNode]] = []  # (prefix without the "*", node)
        self.limit: MatchedLimit | None = None


def _composite(key: str, value: str | None) -> str:
    return f"{key}_{value}" if value else key


def _limit(domain: str, path: str, rule: DescriptorRule) -> MatchedLimit | None:
    spec = rule.rate_limit
    replaces = tuple(r.name for r in rule.replaces if r.name)
    if rule.unlimited:  # counted nowhere, so its unit and size do not matter
        return MatchedLimit(domain, path, UNLIMITED_REMAINING, "second", 1.0, None, "fixed",
                            rule.shadow_mode, True, replaces)
    if spec is None:
        return None
    return MatchedLimit(domain, path, spec.requests_per_unit, spec.unit, float(UNIT_SECONDS[spec.unit]),
                        spec.name or None, spec.algorithm, rule.shadow_mode, False, replaces, spec.burst)


def _build(domain: str, parent: RuleNode, prefix: str, rules: Sequence[DescriptorRule]) -> None:
    for rule in rules:
        composite = _composite(rule.key, rule.value)
        if composite in parent.children:  # load_rules refuses this; keep the first, as a refusal would
            logger.warning("domain %s: duplicate descriptor %s%s ignored", domain, prefix, composite)
            continue
        node = RuleNode()
        node.limit = _limit(domain, prefix + composite, rule)
        _build(domain, node, f"{prefix}{composite}.", rule.descriptors)
        parent.children[composite] = node
        if composite.endswith("*"):
            parent.wildcards.append((composite[:-1], node))


def step(node: RuleNode, key: str, value: str) -> tuple[RuleNode | None, bool]:
    """The child of ``node`` that the entry ``(key, value)`` reaches, and whether it was reached by its value:
    the rule ``key_value``, else the first wildcard rule whose prefix it starts with, else the key-only rule."""
    composite = f"{key}_{value}"
    found = node.children.get(composite)
    if found is not None:
        return found, True
    for prefix, candidate in node.wildcards:
        if composite.startswith(prefix):
            return candidate, True
    return node.children.get(key), False


def build_tree(domain: str, rules: Sequence[DescriptorRule]) -> RuleNode:
    """The matching tree of one domain's rules (what :meth:`RuleBook.put` installs)."""
    root = RuleNode()
    _build(domain, root, "", rules)
    return root


def _match(root: RuleNode, entries: Sequence[tuple[str, str]]) -> MatchedLimit | None:
    node, last = root, len(entries) - 1
    for i, (key, value) in enumerate(entries):
        found = step(node, key, value)[0]
        if found is None:
            return None
        if i == last:
            return found.limit
        if not found.children:  # more entries than the rule has levels
            return None
        node = found
    return None  # no entries


class RuleBook:
    """All domains' rules, replaced live as documents arrive from the limits topic."""

    def __init__(self) -> None:
        self._documents: dict[str, RulesDocument] = {}
        self._roots: dict[str, RuleNode] = {}

    def put(self, domain: str, document: RulesDocument | None) -> None:
        """Install ``document`` as the rules of ``domain``; None (a tombstone) removes the domain."""
        if document is None:
            self._documents.pop(domain, None)
            self._roots.pop(domain, None)
            logger.info("descriptor rules of domain %s removed", domain)
            return
        root = build_tree(domain, document.descriptors)
        self._documents[domain], self._roots[domain] = document, root  # readers see old or new tree
        logger.info("descriptor rules of domain %s loaded: %d top-level rules", domain, len(root.children))

    def __contains__(self, domain: object) -> bool:
        return domain in self._roots

    def __len__(self) -> int:
        return len(self._roots)

    def document(self, domain: str) -> RulesDocument | None:
        return self._documents.get(domain)

    def resolve(self, domain: str, descriptors: Sequence[Sequence[tuple[str, str]]]) -> list[Resolved]:
        """One :class:`Resolved` per descriptor, in order, after ``unlimited`` and ``replaces``."""
        root = self._roots.get(domain)
        if root is None:
            return [_NOTHING] * len(descriptors)
        matched = [_match(root, entries) for entries in descriptors]
        replaced = {name for limit in matched if limit is not None for name in limit.replaces}
        out = []
        for entries, limit in zip(descriptors, matched):
            if limit is None or limit.name in replaced:  # an unlimited rule has no name here
                out.append(_NOTHING)
            elif limit.unlimited:
                out.append(_UNLIMITED)
            else:
                out.append(Resolved(limit, False, counter_key(domain, entries, limit.window)))
        return out
