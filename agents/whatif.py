"""What-if replay, as pure code: recorded traffic decided again under other limits, and the difference.

:class:`Replayer` decides events exactly as ``agents.limiter.Limiter.process`` does: the rules from a
:class:`agents.rules.LimitBook`, one state per rule key in a dict, :func:`decide_fixed` for a request
under one fixed-window rule and :func:`agents.policy.decide_and_store` for every other. ``decided_at`` only
fills the decision's ``ts_decided``; neither a verdict nor a state depends on it, so the event time
is passed. Events must come in the limiter's order for each user (a trace's lines; a topic's offsets
per partition): state is per rule key and every key belongs to one user, so the interleaving of
users does not matter.

Bans are an input, not re-derived: whether a request was blocked depends on when the ban reached
the limiter, which the event does not say. So the block reasons *recorded* for requests
(``ip_blocked``, ``network_blocked``, ``user_blocked``, by ``request_id``) are applied as the
limiter applied the blocklist: the request is blocked with that reason and not counted. A candidate
with other limits therefore keeps the recorded bans; the bans the analytics would have made under
those limits are not derived again. Address refusals (``rate_limited_address``: the gateway counted
the client address, ``schemas.refusals``) are inputs the same way: the address counters are not in
the trace, so a recorded refusal is throttled again, counted against nothing, with its reason (its
numbers are not re-derived).

:func:`diff` compares recorded and replayed (verdict, reason) pairs: counts per verdict transition,
per user for the changed requests, how many changed requests came from flagged addresses or
networks (:class:`Flagged`) and the users hurt most (most ``allow->throttle``).
"""

from collections import Counter
from typing import Iterable, Mapping, NamedTuple, Sequence

from agents.network_bans import NetworkBans
from agents.policy import decide_and_store, decide_refused
from agents.rules import LimitBook
from agents.strategies.base import ADDRESS_REASON
from agents.strategies.fixed import decide_fixed
from schemas.decisions import Decision
from schemas.events import RequestEvent
from schemas.limits import BlocklistEntry
from schemas.refusals import AddressRefusal

__all__ = ["BLOCK_REASONS", "INPUT_REASONS", "NO_DECISION", "Diff", "Flagged", "Replayer", "diff"]

#: The reasons of the limiter's blocklist verdicts.
BLOCK_REASONS = frozenset({"ip_blocked", "network_blocked", "user_blocked"})
#: What a recorded decision contributes to a replay: its bans and its address refusals.
INPUT_REASONS = BLOCK_REASONS | {ADDRESS_REASON}
_RECORDED_REFUSAL = AddressRefusal("recorded", 0, 1.0, 0, 0.0)  # its numbers are not in the trace
#: The verdict of an event the limiter could not decide (it dead-letters it as ``decision_error``).
NO_DECISION = "none"


class Replayer:
    """Decides events in order under ``limits``, keeping the per-rule states between calls of :meth:`decide`.

    ``blocks``: the recorded block reason (or address refusal) of each such request, by request_id.
    """

    def __init__(self, limits: LimitBook, blocks: Mapping[str, str]) -> None:
        self.limits = limits
        self.blocks = blocks
        self.states: dict = {}

    def decide(self, events: Iterable[RequestEvent]) -> tuple[list[str], list[str]]:
        """(verdicts, reasons) of ``events``, in their order."""
        decided = self.decisions(events)
        verdicts = [NO_DECISION if d is None else d.verdict for d in decided]
        return verdicts, ["decision_error" if d is None else d.reason for d in decided]

    def decisions(self, events: Iterable[RequestEvent]) -> list[Decision | None]:
        """The decisions of ``events`` in their order (the loop of ``Limiter.process``); ``None`` for an
        event the limiter would dead-letter as ``decision_error`` (nothing counted)."""
        states = self.states
        get, set_ = states.get, states.__setitem__
        rules_for, blocked = self.limits.rules_for, self.blocks.get
        decided: list[Decision | None] = []
        keep = decided.append
        for event in events:
            block = blocked(event.request_id)
            if block == ADDRESS_REASON:  # rare: a recorded address refusal
                keep(decide_refused(event, _RECORDED_REFUSAL, None, event.ts))
                continue
            try:
                rules = rules_for(event.user_id, event.request_type)
                if len(rules) == 1 and rules[0].algorithm == "fixed":
                    rule = rules[0]
                    before = get(rule.key)
                    decision, after = decide_fixed(event, rule, before, event.ts, block)
                    if after is not before:
                        set_(rule.key, after)
                else:
                    decision = decide_and_store(event, rules, block, get, set_, event.ts)
            except (ArithmeticError, ValueError):
                decision = None
            keep(decision)
        return decided


class Flagged:
    """Flagged subjects: addresses, and networks as CIDRs (an address inside one is flagged)."""

    def __init__(self, subjects: Iterable[str]) -> None:
        self.addresses: set[str] = set()
        self.networks = NetworkBans()
        for subject in subjects:
            if "/" in subject:
                self.networks.put(subject, BlocklistEntry(subject=subject, kind="network", reason="flagged"))
            else:
                self.addresses.add(subject)

    def __contains__(self, ip: str) -> bool:
        return self.subject_of(ip) is not None

    def subject_of(self, ip: str) -> str | None:
        """The flagged address itself, or the flagged network (as flagged) that holds it; None if neither."""
        if ip in self.addresses:
            return ip
        entry = self.networks.lookup(ip) if self.networks else None
        return None if entry is None else entry.subject

    def __len__(self) -> int:
        return len(self.addresses) + len(self.networks)


class Diff(NamedTuple):
    """Recorded against replayed. ``transitions``: ``"allow->throttle"`` etc. over every request (same
    verdict included); ``reproduced``: requests with the same verdict and reason; ``changed``: indexes of
    the others; ``by_user``: transitions of each user's changed requests; ``hurt``: (user, allow->throttle)."""

    total: int
    reproduced: int
    transitions: Counter
    changed: list[int]
    by_user: dict[str, Counter]
    from_flagged: int
    hurt: list[tuple[str, int]]


def diff(
    recorded: tuple[Sequence[str], Sequence[str]],
    replayed: tuple[Sequence[str], Sequence[str]],
    users: Sequence[str],
    ips: Sequence[str],
    flagged: Flagged | None = None,
    top: int = 10,
) -> Diff:
    """Compare (verdicts, reasons) of the same requests, aligned with ``users`` and ``ips``."""
    (old_verdicts, old_reasons), (new_verdicts, new_reasons) = recorded, replayed
    if not len(old_verdicts) == len(new_verdicts) == len(users) == len(ips):
        raise ValueError("recorded, replayed, users and ips must be aligned")
    transitions = _transitions(old_verdicts, new_verdicts)
    changed = [i for i, (a, b, c, d) in enumerate(zip(old_verdicts, new_verdicts, old_reasons, new_reasons))
               if a != b or c != d]
    by_user: dict[str, Counter] = {}
    from_flagged = 0
    for i in changed:
        by_user.setdefault(users[i], Counter())[f"{old_verdicts[i]}->{new_verdicts[i]}"] += 1
        if flagged and ips[i] in flagged:
            from_flagged += 1
    hurt = sorted(((user, c["allow->throttle"]) for user, c in by_user.items() if c["allow->throttle"]),
                  key=lambda pair: (-pair[1], pair[0]))[:top]
    return Diff(len(old_verdicts), len(old_verdicts) - len(changed), transitions, changed, by_user, from_flagged, hurt)


def _transitions(old: Sequence[str], new: Sequence[str]) -> Counter:
    """``"before->after"`` counts; the pairs are counted first (in C), then named."""
    return Counter({f"{a}->{b}": n for (a, b), n in Counter(zip(old, new)).items()})
