"""Limit advice, as pure code: per-user rate profiles from recorded traffic, and the smallest limits that
throttle at most a given share of honest requests, found with the what-if :class:`agents.whatif.Replayer`.

Honest traffic is every recorded request not sent from a flagged address or network (an
:class:`agents.whatif.Flagged`); the rest is abusive. A user's *profile* is the distribution of its honest
requests per fixed window of ``window`` seconds (epoch-aligned, as the ``fixed`` algorithm counts),
over the windows in which it sent anything: p50, p95, p99, max, coefficient of variation.

The *policy* (:class:`Policy`): "throttle at most ``max_throttled`` of a group's honest requests" under a
limit of ``L`` per ``window`` with ``algorithm`` (and ``burst``). For every group (one user, or a tier's
members) the smallest such ``L`` is found by bisection, each candidate checked by deciding the group's
honest requests again with the limiter's own code: the groups are made tiers of a :class:`LimitBook`
(each member its own count, as the limiter counts tier members) and every round of the bisection is
one replay of all honest traffic, the groups' candidates side by side (states are per user, so the
groups do not interact). For ``fixed`` throttles cannot grow with the limit, so the bisection finds
the smallest passing limit; for the others the limit found passed and the one below failed. The final
limits are checked once more and that replay's counts are what :class:`Advice` reports, with the
abusive requests that the advised limits would stop.
"""

import logging
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from agents.rules import LimitBook
from agents.whatif import Flagged, Replayer
from schemas.events import RequestEvent
from schemas.limits import RateLimit, TierLimit

__all__ = ["Advice", "Policy", "UserProfile", "advise_groups", "profile_users", "split_flagged", "throttled_by_group",
           "window_counts"]

logger = logging.getLogger(__name__)

_NEVER = 1_000_000_000  # the book's default for users in no group: never throttles


class UserProfile(NamedTuple):
    """Honest requests per active window of one user."""

    user: str
    requests: int
    windows: int
    p50: float
    p95: float
    p99: float
    max: int
    cv: float  # standard deviation / mean of the per-window counts

    @property
    def burstiness(self) -> float:
        return self.max / self.p50 if self.p50 else float(self.max)


class Policy(NamedTuple):
    max_throttled: float = 0.001
    window: float = 60.0
    algorithm: str = "fixed"
    burst: int | None = None


class Advice(NamedTuple):
    """One group's recommendation and what the what-if says of it (``abusive``: requests from flagged sources
    under the group's users' names; ``stopped``: those throttled under the advice)."""

    group: str
    users: int
    limit: int
    requests: int
    throttled: int
    abusive: int = 0
    stopped: int = 0

    @property
    def share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


def split_flagged(events: Iterable[RequestEvent], flagged: Flagged) -> tuple[list[RequestEvent], list[RequestEvent]]:
    """(honest, abusive) in their order: abusive are the events from flagged addresses or networks."""
    honest, abusive = [], []
    for event in events:
        (abusive if event.ip in flagged else honest).append(event)
    return honest, abusive


def window_counts(events: Sequence[RequestEvent], window: float = 60.0) -> dict[str, np.ndarray]:
    """Each user's requests per active fixed window of ``window`` seconds (``floor(ts / window)``, as the
    limiter's ``fixed`` counts), in window order."""
    if not events:
        return {}
    codes: dict[str, int] = {}
    user_code = np.fromiter((codes.setdefault(e.user_id, len(codes)) for e in events), np.int64, len(events))
    index = np.floor(np.fromiter((e.ts for e in events), np.float64, len(events)) / window).astype(np.int64)
    index -= index.min()
    span = int(index.max()) + 1
    keys, counts = np.unique(user_code * span + index, return_counts=True)
    owners = keys // span
    bounds = np.flatnonzero(np.diff(owners)) + 1
    names = list(codes)
    return {names[int(o[0])]: c for o, c in zip(np.split(owners, bounds), np.split(counts, bounds))}


def profile_users(events: Sequence[RequestEvent], window: float = 60.0) -> dict[str, UserProfile]:
    """Each user's profile (see :func:`window_counts`), by user id."""
    found = {}
    for user, chunk in window_counts(events, window).items():
        p50, p95, p99 = np.percentile(chunk, (50, 95, 99))
        found[user] = UserProfile(user, int(chunk.sum()), len(chunk), float(p50), float(p95), float(p99),
                                  int(chunk.max()), float(chunk.std() / chunk.mean()))
    return dict(sorted(found.items()))


def _book(policy: Policy, limits: Mapping[str, int], members: Mapping[str, str],
          default: RateLimit | None) -> LimitBook:
    """A book where group ``g`` is a tier with limit ``limits[g]`` and ``members`` (user -> group)."""
    base = default or RateLimit(user_id="*", limit=_NEVER, window=policy.window)
    book = LimitBook(base.limit, base.window, base.algorithm)
    for group, limit in limits.items():
        book.put_tier(group, TierLimit(tier=group, limit=limit, window=policy.window, algorithm=policy.algorithm,
                                       burst=policy.burst))
    for user, group in members.items():
        book.put_member(user, group)
    return book


def throttled_by_group(events: Sequence[RequestEvent], book: LimitBook, members: Mapping[str, str],
                       blocks: Mapping[str, str] = {}) -> dict[str, int]:
    """Throttles of each group's members when ``events`` are decided under ``book`` (``None``: no group);
    a recorded address refusal is no throttle of the limits under trial, whatever they are."""
    verdicts, _ = Replayer(book, blocks).decide(events)
    counts: dict[str, int] = {}
    for event, verdict in zip(events, verdicts):
        if verdict == "throttle" and blocks.get(event.request_id) is None:
            group = members.get(event.user_id)
            counts[group] = counts.get(group, 0) + 1
    return counts


def advise_groups(events: Sequence[RequestEvent], members: Mapping[str, str], policy: Policy,
                  flagged: Flagged | None = None, blocks: Mapping[str, str] = {},
                  default: RateLimit | None = None) -> dict[str, Advice]:
    """The smallest limit of each group (``members``: user -> group) meeting ``policy`` on the group's honest
    requests (``events`` not from ``flagged``, in their order), and the abusive requests it stops: all of
    ``events`` decided under the advice (users in no group under ``default``; none: never throttled)."""
    honest, abusive = split_flagged(events, flagged) if flagged else (list(events), [])
    by_group: dict[str, list[RequestEvent]] = {}
    for event in honest:
        if (group := members.get(event.user_id)) is not None:
            by_group.setdefault(group, []).append(event)
    requests = {group: len(chunk) for group, chunk in by_group.items()}
    peaks: dict[str, int] = {}
    for user, profile in profile_users(honest, policy.window).items():
        if (group := members.get(user)) is not None:
            peaks[group] = max(peaks.get(group, 1), profile.max)
    low = {group: 0 for group in requests}  # a limit of 0 throttles everything: never passes
    high = dict(peaks)  # no window holds more: "fixed" throttles nothing; the others are checked (doubled if need be)
    verified = set(requests) if policy.algorithm == "fixed" else set()
    allowed = {group: policy.max_throttled * n for group, n in requests.items()}
    for rounds in range(64):
        open_ = [g for g in requests if g not in verified or high[g] > low[g] + 1]
        if not open_:
            break
        trial = {g: (low[g] + high[g]) // 2 if g in verified else high[g] for g in open_}
        replayed = [event for g in open_ for event in by_group[g]]  # per-user order kept; users do not interact
        got = throttled_by_group(replayed, _book(policy, trial, members, None), members, blocks)
        for group, limit in trial.items():
            passed = got.get(group, 0) <= allowed[group]
            if group not in verified:
                if passed:
                    verified.add(group)
                else:
                    low[group], high[group] = limit, 2 * limit
            elif passed:
                high[group] = limit
            else:
                low[group] = limit
        logger.debug("bisection round %d: %d of %d groups open", rounds, len(open_), len(requests))
    final = throttled_by_group(honest, _book(policy, high, members, None), members, blocks)
    abusive_ids = {e.request_id for e in abusive}
    stopped_by, abusive_by = _abusive_counts(events, _book(policy, high, members, default), members, blocks,
                                             abusive_ids)
    sizes: dict[str, int] = {}
    for group in members.values():
        sizes[group] = sizes.get(group, 0) + 1
    return {g: Advice(g, sizes[g], high[g], requests[g], final.get(g, 0), abusive_by.get(g, 0), stopped_by.get(g, 0))
            for g in sorted(requests)}


def _abusive_counts(events, book, members, blocks, abusive_ids) -> tuple[dict, dict]:
    verdicts, _ = Replayer(book, blocks).decide(events)
    stopped: dict = {}
    seen: dict = {}
    for event, verdict in zip(events, verdicts):
        if event.request_id in abusive_ids:
            group = members.get(event.user_id)
            seen[group] = seen.get(group, 0) + 1
            if verdict == "throttle":
                stopped[group] = stopped.get(group, 0) + 1
    return stopped, seen
