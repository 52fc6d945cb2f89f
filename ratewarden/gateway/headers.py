"""The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers-11) of a request's applicable limits.

``RateLimit-Policy`` lists one quota policy item per limit that applies to the request, in the
order the limiter checks them; ``RateLimit`` names the one that governed the decision. Items are
RFC 8941 Strings with Integer parameters, named after the limit they are:

* ``"default"``: the default limit, or the ``ratewarden`` rules' key-only ``user_id`` rule (the user has no
  limit of its own),
* ``"user"``: the user's own limit (its record, or the ``ratewarden`` rules' rule for its id),
* ``"type"``: the user's limit on this request type (checked on top of the user or default limit),
* ``"tier"``, ``"tier_type"``: the limit, or the limit on this request type, of the user's tier
  (the user has no limit of its own there),
* ``"address"``: the client address's limit (a ``remote_address`` rule of the ``ratewarden``
  domain), listed when it refused the request (``ratewarden.gateway.addresses``).

``q`` is the limit and ``w`` its window in whole seconds (rounded up, at least 1); ``r`` is what
remains of the quota after this request and ``t`` the seconds until the window resets (rounded up).
The policies come from the gateway's copy of the limits; when the decision was made under numbers
the gateway does not have yet (a limit changed moments ago), the governing item carries the
decision's own ``q`` and ``w`` so the two fields always agree with the decision.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

from agents.rules import LimitBook
from agents.strategies.base import THROTTLE_REASONS, Rule
from schemas.decisions import Decision

__all__ = ["ADDRESS", "DEFAULT", "TIER", "TIER_TYPE", "TYPE", "USER", "Policies", "PolicyCache",
           "governing", "limit_item", "policies", "policy_item", "rate_fields", "rate_headers", "seconds", "with_address"]

DEFAULT, USER, TYPE, TIER, TIER_TYPE, ADDRESS = "default", "user", "type", "tier", "tier_type", "address"
#: A throttling reason (without ``shadow:``) -> the scope of the rule it names.
_SCOPES = {reason: scope for scope, reason in THROTTLE_REASONS.items()}


def seconds(value: float) -> int:
    """Whole seconds, rounded up (a float's last-bit noise is not a second more), never negative."""
    return max(0, math.ceil(value - 1e-9))


def _window(value: float) -> int:
    """``w``: a window in whole seconds, at least 1."""
    whole = math.ceil(value - 1e-9)
    return whole if whole > 1 else 1


def policy_item(name: str, quota: int, window: float) -> str:
    """One ``RateLimit-Policy`` item; ``name`` is the item's RFC 8941 String, quotes included."""
    return f'{name};q={quota};w={_window(window)}'


def limit_item(name: str, remaining: int, reset: float) -> str:
    """The ``RateLimit`` item; ``name`` as for :func:`policy_item`."""
    return f"{name};r={remaining};t={seconds(reset)}"


def _item(name: str, quota: int, window: float) -> str:
    return policy_item(f'"{name}"', quota, window)


class Policies(NamedTuple):
    """The applicable limits of one request shape and their ``RateLimit-Policy`` value."""

    rules: Sequence[Rule]
    names: tuple[str, ...]
    value: str  # the RateLimit-Policy field value
    shapes: tuple[tuple[int, int], ...]  # (q, w) per rule, what a decision is matched by


def policies(rules: Sequence[Rule], own_limit: bool) -> Policies:
    """The policies of ``rules`` (``LimitBook.rules_for``: never empty); ``own_limit``: the user has its own."""
    names = tuple((USER if own_limit else DEFAULT) if rule.scope == "user" else rule.scope for rule in rules)
    value = ", ".join(_item(n, r.limit, r.window) for n, r in zip(names, rules))
    return Policies(rules, names, value, tuple((r.limit, _window(r.window)) for r in rules))


def with_address(p: Policies, d: Decision) -> Policies:
    """``p`` and, last, the address limit that refused ``d`` (its numbers are the decision's)."""
    rule = Rule("", d.limit, d.reset_at - d.window_start, scope=ADDRESS)
    return policies([*p.rules, rule], USER in p.names)


def governing(p: Policies, d: Decision, shape: tuple[int, int] | None = None) -> int:
    """The index of the policy that governed ``d``: the one with the decision's limit and window
    (``shape``: ``(limit, whole-second window)`` of ``d``, if the caller has it already).

    Several alike (or none: the gateway's limits lag the worker's): the scope the reason names
    (``rate_limited_type``: the type limit, ...), else the first.
    """
    if shape is None:
        shape = (d.limit, _window(d.reset_at - d.window_start))
    if len(p.shapes) == 1 and p.shapes[0] == shape:  # the common case: one limit, and it decided
        return 0
    matches = [i for i, s in enumerate(p.shapes) if s == shape]
    if len(matches) == 1:
        return matches[0]
    scope = _SCOPES.get(d.reason.removeprefix("shadow:"), "user")
    candidates = matches or range(len(p.rules))
    return next((i for i in candidates if p.rules[i].scope == scope), candidates[0])


def rate_fields(p: Policies, d: Decision) -> tuple[str, str]:
    """``RateLimit-Policy`` and ``RateLimit`` of decision ``d`` under policies ``p``. Runs for every answer."""
    window = d.reset_at - d.window_start
    shape = (d.limit, _window(window))
    i = 0 if len(p.shapes) == 1 and p.shapes[0] == shape else governing(p, d, shape)
    name, value = p.names[i], p.value
    if p.shapes[i] != shape:  # the gateway's copy lags
        items = [_item(n, r.limit, r.window) for n, r in zip(p.names, p.rules)]
        items[i] = _item(name, d.limit, window)
        value = ", ".join(items)
    return value, limit_item(f'"{name}"', d.remaining, d.reset_at - d.ts_event)


def rate_headers(d: Decision, p: Policies | None = None) -> dict[str, str]:
    """Both fields of ``d`` by name; without ``p``, one ``"default"`` policy with the decision's own numbers."""
    if p is None:
        p = policies([Rule("", d.limit, d.reset_at - d.window_start)], own_limit=False)
    policy, ratelimit = rate_fields(p, d)
    return {"RateLimit-Policy": policy, "RateLimit": ratelimit}


class PolicyCache:
    """``Policies`` per (user, request type), rebuilt when the limit book hands out new rules."""

    def __init__(self, limits: LimitBook, max_entries: int = 20_000) -> None:
        self.limits, self.max_entries = limits, max_entries
        self._cache: dict[tuple[str, str], Policies] = {}

    def get(self, user_id: str, request_type: str) -> Policies:
        rules = self.limits.rules_for(user_id, request_type)
        shape = (user_id, request_type)
        cached = self._cache.get(shape)
        if cached is not None and cached.rules is rules:  # the book's cached list: the same limits
            return cached
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        made = self._cache[shape] = policies(rules, self.limits.has_own(user_id))
        return made
