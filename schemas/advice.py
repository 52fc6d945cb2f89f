"""Records of the ``advice`` topic: what ``ratewarden advise --publish`` recommended, served by ``GET /advice``.

The topic is compacted: one :class:`LimitAdvice` per tier (key ``tier:<name>``) and per user (key
``user:<id>``), then one :class:`AdviceRun` (key ``run``) written last. A reader takes the newest run and
the advice records made at the same time (``made_at``): an older run's records for tiers or users the
newest run has not are stale, not current. The advice is a recommendation only: nothing applies it.
"""

from typing import Literal

import msgspec

__all__ = ["ADVICE_RUN_KEY", "AdvicePolicy", "AdviceRecord", "AdviceRun", "LimitAdvice"]

#: Key of the :class:`AdviceRun` record on the advice topic.
ADVICE_RUN_KEY = "run"


class AdvicePolicy(msgspec.Struct, frozen=True):
    """At most ``max_throttled`` of honest requests throttled, under limits per ``window`` seconds."""

    max_throttled: float
    window: float
    algorithm: str
    burst: int | None = None


class LimitAdvice(msgspec.Struct, frozen=True, tag_field="type", tag="limit"):
    """The advised limit of one tier (``kind="tier"``) or one user, and what the what-if check counted under
    it: the group's honest requests, how many it throttled, and the abusive requests sent under its users'
    names (``abusive``) that it would throttle (``stopped``). ``tier``: a user's tier in the same run."""

    kind: Literal["tier", "user"]
    name: str
    made_at: float
    limit: int
    window: float
    algorithm: str
    users: int
    requests: int
    throttled: int
    burst: int | None = None
    abusive: int = 0
    stopped: int = 0
    tier: str | None = None


class AdviceRun(msgspec.Struct, frozen=True, tag_field="type", tag="run"):
    """One publication: when, under which policy, over how many recorded and honest requests."""

    made_at: float
    policy: AdvicePolicy
    tiers: int
    users: int
    recorded: int
    honest: int
    flagged_sources: int


AdviceRecord = AdviceRun | LimitAdvice
