"""The limits of the request stream as descriptor rules: the rules document of the domain ``ratewarden``.

One rule engine serves Envoy's calls and the requests the limiter decides (stream events and
``POST /requests``): the same rules file format, the same tree and the same matching
(:mod:`agents.descriptor_rules`). A request of user ``u`` and type ``t`` is the two descriptors
``[(user_id, u)]`` and ``[(user_id, u), (request_type, t)]`` of the domain ``ratewarden``, and the
client address ``[(remote_address, ip)]``::

    domain: ratewarden
    descriptors:
      - key: user_id                        # key only: every user, each counted apart (the default limit)
        rate_limit: {unit: minute, requests_per_unit: 100}
        descriptors:
          - key: request_type
            value: login                    # every user's logins
            rate_limit: {unit: minute, requests_per_unit: 5}
      - key: user_id
        value: partner-*                    # a wildcard: every user whose id starts with "partner-"
        rate_limit: {unit: second, requests_per_unit: 50, algorithm: sliding}
      - key: remote_address                 # every client address, each counted apart
        rate_limit: {unit: second, requests_per_unit: 20}

The per-user records of the limits topic (``ratewarden limits set``, ``PUT /limits/{user}``) are
rules of this model too: a user's record is the rule ``user_id: <user>`` and a typed record its
child ``request_type: <type>``; they stand above the document (a record set at run time is the
operator's latest word). From most to least specific, a request's user limit is the user's record,
the document's rule for the user's value (or a wildcard), its tier's limit, the document's key-only
``user_id`` rule, the worker's default (``RATEWARDEN_DEFAULT_LIMIT``); its typed limit, checked on top,
is found the same way under the user rule that matched. As in the reference, the typed rule is looked up
under the user rule that was reached, and every matched rule counts the request under the user's own
counter key, so a user keeps its count when its limit moves from one rule to another.

A ``remote_address`` rule is counted where an address's count is exact with any number of workers:
on the descriptor counters of ``rls-hits``, keyed by the address. The gateway counts each request
of ``POST /requests`` (and each item of the batch) there before it publishes it, and publishes one
over the limit with a refusal the limiter turns into a throttle (``schemas.refusals``). Events a
producer publishes straight to the requests topic are keyed by user and reach no such counter: the
limits of their users apply, and their addresses are the analytics' to ban.

What the stream cannot take is refused when the file is loaded (:func:`event_rule_errors`): keys
other than these three, deeper levels, ``unlimited`` and ``replaces`` (every request must have a limit,
and the stream's limits never replace one another), units longer than a day.
"""

from typing import Any, NamedTuple

from agents.descriptor_rules import MatchedLimit, RuleNode, build_tree, step
from schemas.descriptors import UNIT_SECONDS, RulesDocument

__all__ = ["ADDRESS_KEY", "EVENTS_DOMAIN", "EventRules", "UserMatch", "event_rule_errors"]

#: The domain whose rules limit the request stream.
EVENTS_DOMAIN = "ratewarden"
USER_KEY, TYPE_KEY, ADDRESS_KEY = "user_id", "request_type", "remote_address"
_LONGEST = 86_400  # a day: the stream's counters are kept a few windows past event time


class UserMatch(NamedTuple):
    node: RuleNode | None  # the user rule the descriptor [(user_id, u)] reached
    by_value: bool  # reached by the user's id (a value or wildcard rule), not by the key-only rule

    @property
    def limit(self) -> MatchedLimit | None:
        return None if self.node is None else self.node.limit


_NONE = UserMatch(None, False)


class EventRules:
    """The document of the domain ``ratewarden`` as a matching tree (empty until one is loaded)."""

    def __init__(self) -> None:
        self.document: RulesDocument | None = None
        self._root: RuleNode | None = None
        self.addresses = False  # the document has remote_address rules

    def put(self, document: RulesDocument | None) -> None:
        """Install ``document`` (None: a tombstone, back to records, tiers and the default)."""
        self.document = document
        self._root = None if document is None else build_tree(EVENTS_DOMAIN, document.descriptors)
        self.addresses = document is not None and any(rule.key == ADDRESS_KEY for rule in document.descriptors)

    def address(self, ip: str) -> MatchedLimit | None:
        """The limit of requests from ``ip``: its rule (a value or wildcard) or the key-only ``remote_address`` rule."""
        if not self.addresses:
            return None
        node = step(self._root, ADDRESS_KEY, ip)[0]
        return None if node is None else node.limit

    def user(self, user_id: str) -> UserMatch:
        """The user rule of ``user_id``: by its value (or a wildcard) if there is one, else the key-only rule."""
        if self._root is None:
            return _NONE
        node, by_value = step(self._root, USER_KEY, user_id)
        return _NONE if node is None else UserMatch(node, by_value)

    @staticmethod
    def typed(user: UserMatch, request_type: str) -> MatchedLimit | None:
        """The limit of ``request_type`` under the user rule ``user`` reached (None: no typed rule there)."""
        if user.node is None or not user.node.children:
            return None
        node = step(user.node, TYPE_KEY, request_type)[0]
        return None if node is None else node.limit


def event_rule_errors(rules: list[dict[str, Any]], depth: int = 0) -> list[tuple[int, str]]:
    """What the request stream cannot take in the ``ratewarden`` domain's rules, as (line, message) pairs.

    ``rules`` are the rules file's descriptors as :mod:`agents.rules_file` reads them (dicts with
    their ``line``), so each refusal names its line like every other error of the file."""
    errors = []
    expected = (USER_KEY, ADDRESS_KEY) if depth == 0 else (TYPE_KEY,)
    for rule in rules:
        line = rule["line"]
        if depth > 1:
            errors.append((line, f"the {EVENTS_DOMAIN} domain has two levels: {USER_KEY}, then {TYPE_KEY}"))
            continue
        if rule["key"] and rule["key"] not in expected:
            keys = " or ".join(f"'{key}'" for key in expected)
            errors.append((line, f"the {EVENTS_DOMAIN} domain takes the key {keys} here, not '{rule['key']}'"))
        if rule["key"] == ADDRESS_KEY and rule["descriptors"]:
            errors.append((line, f"'{ADDRESS_KEY}' has no levels under it in the {EVENTS_DOMAIN} domain"))
            continue
        if rule["unlimited"] or rule["replaces"]:
            errors.append((line, f"'unlimited' and 'replaces' do not apply in the {EVENTS_DOMAIN} domain: "
                                 "every request has a limit"))
        unit = (rule.get("rate_limit") or {}).get("unit")
        if unit in UNIT_SECONDS and UNIT_SECONDS[unit] > _LONGEST:
            errors.append((line, f"unit '{unit}' is longer than the {EVENTS_DOMAIN} domain takes (a day at most)"))
        errors.extend(event_rule_errors(rule["descriptors"], depth + 1))
    return errors
