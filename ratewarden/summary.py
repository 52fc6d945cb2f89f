"""Terminal summary of a set of decisions: the verdict mix and the top offenders."""

from collections import Counter
from typing import Sequence

from rich.console import Console
from rich.table import Table

from schemas.decisions import Decision

__all__ = ["print_summary", "verdict_counts", "top_offenders"]


def verdict_counts(decisions: Sequence[Decision]) -> Counter:
    return Counter("shadow" if d.shadow else d.verdict for d in decisions)


def top_offenders(decisions: Sequence[Decision], n: int = 10) -> list[tuple[str, int, int]]:
    """(user, throttled or blocked, total) for the users refused most often."""
    refused: Counter = Counter()
    total: Counter = Counter()
    for d in decisions:
        total[d.user_id] += 1
        if d.verdict != "allow" or d.shadow:
            refused[d.user_id] += 1
    return [(user, count, total[user]) for user, count in refused.most_common(n)]


def print_summary(decisions: Sequence[Decision], console: Console | None = None) -> None:
    console = console or Console()
    counts = verdict_counts(decisions)
    table = Table("verdict", "decisions", "share", title=f"{len(decisions)} decisions")
    for verdict in ("allow", "throttle", "block", "shadow"):
        n = counts.get(verdict, 0)
        table.add_row(verdict, f"{n:,}", f"{n / max(1, len(decisions)):.1%}")
    console.print(table)
    offenders = Table("user", "refused", "requests", "refused share", title="top offenders")
    for user, refused, total in top_offenders(decisions):
        offenders.add_row(user, f"{refused:,}", f"{total:,}", f"{refused / total:.1%}")
    console.print(offenders)
