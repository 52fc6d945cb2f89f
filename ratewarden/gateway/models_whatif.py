"""Bodies of ``POST /whatif`` and ``GET /advice`` (pydantic, in the style of :mod:`ratewarden.gateway.models`).

The candidate of a what-if is given as the CLI takes it (``ratewarden whatif``): a limits document
(``RateLimit`` records, what ``--limits FILE`` reads), changes in the ``--set`` syntax, a ``--default``.
"""

from typing import Annotated, Any

from pydantic import BaseModel, Field

from ratewarden.gateway.models import LimitBody, UserId, _Body
from schemas.limits import Algorithm

__all__ = ["AdviceInfo", "AdvicePolicyInfo", "AdviceRunInfo", "CandidateLimit", "HurtUser", "Invalid",
           "LimitAdviceInfo", "RulesInfo", "WhatIfBody", "WhatIfSummary"]

_TIME = "event time: epoch seconds, or ISO 8601 (UTC unless it says otherwise)"
Time = Annotated[float, Field(ge=0, le=1e11)] | Annotated[str, Field(min_length=4, max_length=40)]
SetSpec = Annotated[str, Field(min_length=5, max_length=300, pattern=r"^[\x20-\x7e]+$",
                               examples=["alice=20/60", "alice:login=5/60/sliding", "gold=500/60/gcra/20"])]


class Invalid(BaseModel):
    detail: str | list[dict[str, Any]] = Field(description="what is wrong: a message, or the body's field errors")


class CandidateLimit(LimitBody):
    """One user's own limit (of one request type, if given): a ``RateLimit`` record."""

    user_id: UserId


class WhatIfBody(_Body):
    """Recorded traffic in [since, until) decided again under the limits in force, or a candidate: ``limits``
    replacing the users' own limits in force (tiers kept), then ``set`` and ``set_tier`` over them,
    ``default``, and ``rules`` (the ``ratewarden`` domain of a rules file). No candidate: the reproduction check."""

    since: Time = Field(description=f"from this time ({_TIME})", examples=[1732900000])
    until: Time = Field(description=f"before this time ({_TIME}); at most `gateway_whatif_max_range` after since",
                        examples=["2024-11-29T17:20:00Z"])
    limits: list[CandidateLimit] | None = Field(
        None, max_length=1_000, description="the users' own limits of the candidate, replacing theirs in force "
                                            "(what `ratewarden whatif --limits FILE` reads)")
    set: list[SetSpec] = Field([], max_length=100, description="USER[:TYPE]=LIMIT/WINDOW[/ALGORITHM[/BURST]] each: "
                                                               "one user's candidate limit (a user with requests in "
                                                               "the range)")
    set_tier: list[SetSpec] = Field([], max_length=100, description="TIER[:TYPE]=LIMIT/WINDOW[/ALGORITHM[/BURST]] "
                                                                    "each: one tier's candidate limit (a tier in force)")
    default: Annotated[str, Field(min_length=3, max_length=100, pattern=r"^[\x20-\x7e]+$")] | None = Field(
        None, description="LIMIT/WINDOW[/ALGORITHM]: the candidate default limit", examples=["60/60"])
    rules: Annotated[str, Field(min_length=1, max_length=65_536)] | None = Field(
        None, description="a rules file's text (YAML, as `ratewarden limits load` reads it): its `ratewarden` domain "
                          "replaces the one in force (what `ratewarden whatif --rules FILE` reads)")
    top: int = Field(10, ge=0, le=100, description="users hurt most to list")


class HurtUser(BaseModel):
    user_id: str
    allow_to_throttle: int
    throttle_to_allow: int
    changed: int = Field(description="its requests whose verdict or reason changes")


class RulesInfo(BaseModel):
    default: str = Field(description="LIMIT/WINDOW/ALGORITHM of users in no tier and without a limit")
    limits: int = Field(description="users' own limits (typed ones included)")
    tiers: int = Field(description="tiers with limits or members")
    changes: list[str] = Field(description="the candidate's changes, as given")


class WhatIfSummary(BaseModel):
    since: float
    until: float
    candidate: bool = Field(description="false: the limits in force (the reproduction check)")
    rules: RulesInfo
    events: int = Field(description="requests in the range with a recorded decision: decided again")
    unrecorded: int = Field(description="requests without a recorded decision (left out)")
    blocked_as_recorded: int = Field(description="blocked by a ban, as recorded (bans are an input)")
    reproduced: int = Field(description="recorded verdicts and reasons that came out again")
    changed: int = Field(description="requests whose verdict or reason changes")
    transitions: dict[str, int] = Field(description="recorded->replayed verdict, every request")
    changed_by_transition: dict[str, int] = Field(description="the changed requests by recorded->replayed verdict")
    from_flagged: int = Field(description="changed requests from flagged addresses or networks")
    flagged_sources: int = Field(description="flagged addresses and networks (allow-listed ones left out)")
    hurt: list[HurtUser] = Field(description="the users with the most allow->throttle, most first")
    seconds: float = Field(description="time taken: reading the topics and deciding")


class AdvicePolicyInfo(BaseModel):
    max_throttled: float = Field(description="share of honest requests the advice may throttle")
    window: float
    algorithm: Algorithm
    burst: int | None


class AdviceRunInfo(BaseModel):
    made_at: float = Field(description="when `ratewarden advise --publish` made it (epoch seconds)")
    policy: AdvicePolicyInfo
    tiers: int
    users: int
    recorded: int = Field(description="recorded requests the advice was learned from")
    honest: int = Field(description="of them, not from a flagged source")
    flagged_sources: int


class LimitAdviceInfo(BaseModel):
    name: str = Field(description="the tier, or the user")
    limit: int = Field(description="the advised limit per window")
    window: float
    algorithm: Algorithm
    burst: int | None
    users: int
    requests: int = Field(description="honest requests the what-if check decided under the limit")
    throttled: int = Field(description="of them, throttled")
    abusive: int = Field(description="requests from flagged sources under the users' names")
    stopped: int = Field(description="of them, throttled under the advice")
    tier: str | None = Field(description="a user's tier in the same advice")


class AdviceInfo(BaseModel):
    run: AdviceRunInfo
    tiers: list[LimitAdviceInfo] = Field(description="every tier, by name")
    users: list[LimitAdviceInfo] = Field(description="users by name, at most `users` of them")
    users_total: int = Field(description="users advised in this run")
