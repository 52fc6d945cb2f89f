"""``ratewarden limits load FILE`` and ``ratewarden limits rules``: descriptor rules files, checked whole.

A rules file is envoyproxy/ratelimit's format (docs/rls.md). Every error is reported with its line
and nothing is published unless the whole file is valid; a valid file replaces the rules of each
domain it names, live, through the compacted limits topic (gateways apply it as it arrives; the domain
``ratewarden`` holds the request stream's own limits, which workers apply too: ``agents.event_rules``).
"""

import logging
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agents.event_rules import EVENTS_DOMAIN
from agents.rules_file import RulesFileError, load_rules
from schemas.descriptors import DescriptorRule
from schemas.limits import RateLimit

__all__ = ["list_rules", "load_rules_file", "unload_domain"]

logger = logging.getLogger(__name__)
console = Console()


def load_rules_file(path: str, check_only: bool = False) -> int:
    """Validate ``path`` and (unless ``check_only``) publish it; 0 when valid, 1 with every error printed."""
    from ratewarden import control

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    try:
        documents = load_rules(text, source=path)
    except RulesFileError as exc:
        console.print(f"[red]{len(exc.errors)} error(s); nothing was applied:[/red]")
        for error in exc.errors:
            console.print(f"  {escape(path)}:{error.line}: {escape(error.message)}", soft_wrap=True)
        return 1
    rules = sum(_count(doc.descriptors) for doc in documents)
    domains = ", ".join(doc.domain for doc in documents)
    if check_only:
        console.print(f"{escape(path)} is valid: {rules} rules in {escape(domains)} (not published: --check)")
        return 0
    control.publish_rules(documents)
    readers = "gateways and workers" if EVENTS_DOMAIN in {doc.domain for doc in documents} else "gateways"
    console.print(f"published {rules} rules of {escape(domains)}; {readers} apply them as they arrive")
    return 0


def _count(descriptors: list[DescriptorRule]) -> int:
    return sum(1 + _count(d.descriptors) for d in descriptors)


def _rows(domain: str, descriptors: list[DescriptorRule], path: str = ""):
    for rule in descriptors:
        here = f"{path}.{rule.key}" if path else rule.key
        if rule.value is not None:
            here += f"={rule.value}"
        limit = rule.rate_limit
        if rule.unlimited:
            what = "unlimited"
        elif limit is not None:
            what = f"{limit.requests_per_unit}/{limit.unit} ({limit.algorithm})"
        else:
            what = ""
        flags = " ".join(f for f, on in (("shadow", rule.shadow_mode),) if on)
        replaces = ", ".join(r.name for r in rule.replaces)
        yield domain, here, what, (limit.name if limit and limit.name else ""), flags, replaces
        yield from _rows(domain, rule.descriptors, here)


def unload_domain(domain: str) -> int:
    """Remove ``domain``'s rules (a tombstone on the limits topic): its calls are answered OK, unlimited."""
    from ratewarden import control

    if domain not in {doc.domain for doc in control.read_rules()}:
        raise ValueError(f"no rules for domain {domain!r} (ratewarden limits rules lists them)")
    control.delete_rules(domain)
    console.print(f"removed the rules of {escape(domain)}; gateways drop them as the tombstone arrives")
    return 0


def list_rules() -> int:
    """Every domain's rules, and the per-user records as the rules of the ``ratewarden`` domain they are."""
    from ratewarden import control

    table = Table("domain", "descriptor", "limit", "name", "mode", "replaces", "from")
    for document in sorted(control.read_rules(), key=lambda d: d.domain):
        for row in _rows(document.domain, document.descriptors):
            table.add_row(*map(escape, row), "file")
    for limit in sorted(control.read_limits(), key=lambda x: (x.user_id, x.request_type or "")):
        table.add_row(*map(escape, _record_row(limit)), "record")
    console.print(table)
    return 0


def _record_row(limit: RateLimit) -> tuple[str, ...]:
    """A per-user record as the ``ratewarden`` domain's rule it is (``agents.event_rules``)."""
    path = f"user_id={limit.user_id}" + (f".request_type={limit.request_type}" if limit.request_type else "")
    what = f"{limit.limit}/{limit.window:g} s ({limit.algorithm})"
    return EVENTS_DOMAIN, path, what, "", "shadow" if limit.shadow else "", ""
