"""POST /whatif: recorded traffic decided again under the limits in force or a candidate, and what changes.

The what-if of ``ratewarden whatif --from-topics`` (docs/whatif.md), bounded for a server: a range of at
most ``gateway_whatif_max_range`` seconds of event time, at most ``gateway_whatif_max_events`` events
(413 beyond), the topics read within ``gateway_whatif_read_timeout`` seconds (503 after), one what-if at a
time per gateway (429 with Retry-After for another), the reading and deciding in worker threads so the
hot routes keep serving. A thread cannot be stopped: one whose request gave up (a timeout, a client gone)
keeps the slot until it ends. Nothing is applied.
"""

import asyncio
import logging
import math
import time
from collections import Counter
from typing import NamedTuple

from fastapi import APIRouter, HTTPException, Request
from kafka.errors import KafkaError

from agents.whatif import BLOCK_REASONS
from ratewarden.gateway.auth import require
from ratewarden.gateway.models import Problem
from ratewarden.gateway.models_whatif import HurtUser, Invalid, RulesInfo, WhatIfBody, WhatIfSummary
from ratewarden.gateway.routes import AUTH_ERRORS, BODY_ERRORS, read_unavailable
from ratewarden.whatif import compare, decide_recorded
from ratewarden.whatif_inputs import TooManyEvents, from_topics, parse_time
from ratewarden.whatif_limits import (
    candidate_book, convert_limits, default_limit, limits_in_force, new_book, parse_default, parse_set, parse_tier_set,
    stream_rules,
)
from schemas.descriptors import RulesDocument
from schemas.limits import RateLimit

__all__ = ["RETRY_AFTER", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["whatif"])

#: Seconds a second what-if is told to wait (Retry-After of its 429).
RETRY_AFTER = 5
#: Seconds past the read timeout the route waits for a reading thread that did not notice its deadline.
GRACE = 5.0


class _Job(NamedTuple):
    since: float
    until: float
    limits: list | None
    changes: list
    tier_changes: list
    default: RateLimit | None
    top: int
    given: list[str]  # the candidate as given, for the answer
    document: RulesDocument | None = None  # the ratewarden domain's rules of the candidate

    @property
    def candidate(self) -> bool:
        return self.limits is not None or bool(self.changes or self.tier_changes or self.default or self.document)


class _Slot:
    """One what-if at a time per app: busy while any future it holds (the request's work, or a reading
    thread its request gave up on) has not ended."""

    def __init__(self) -> None:
        self.held = 0

    def hold(self, future: asyncio.Future) -> None:
        self.held += 1
        future.add_done_callback(self._release)

    def _release(self, future: asyncio.Future) -> None:
        self.held -= 1
        if not future.cancelled() and future.exception() is not None:  # retrieved: logged, never "never retrieved"
            logger.debug("a what-if ended with %r", future.exception())


def _time(text: float | str, name: str) -> float:
    moment = parse_time(text) if isinstance(text, str) else float(text)
    if not (math.isfinite(moment) and 0 <= moment <= 1e11):
        raise ValueError(f"{name}: {text!r} is not a time between 1970 and 5138")
    return moment


def _job(body: WhatIfBody, max_range: float) -> _Job:
    """The body's range and candidate, parsed as the CLI parses them (ValueError: 422)."""
    since, until = _time(body.since, "since"), _time(body.until, "until")
    if until <= since:
        raise ValueError("until must be after since")
    if until - since > max_range:
        raise ValueError(f"the range is {until - since:,.0f} s of event time; at most {max_range:,.0f} s "
                         "(gateway_whatif_max_range): narrow since and until")
    limits = None
    if body.limits is not None:
        limits = convert_limits([x.model_dump() for x in body.limits], [f"limits[{i}]" for i in range(len(body.limits))])
    document = None if body.rules is None else stream_rules(body.rules, "rules")
    given = ([f"limits: {len(limits)} records"] if limits is not None else []) + [f"set {x}" for x in body.set] \
        + [f"set_tier {x}" for x in body.set_tier] + ([f"default {body.default}"] if body.default else []) \
        + ([f"rules: {len(document.descriptors)} top-level rules of {document.domain}"] if document else [])
    return _Job(since, until, limits, [parse_set(s) for s in body.set], [parse_tier_set(s) for s in body.set_tier],
                parse_default(body.default) if body.default else None, body.top, given, document)


def _read(settings, job: _Job):
    """In a worker thread: the recorded traffic of the range and the candidate's LimitBook."""
    timeout = settings.gateway_whatif_read_timeout
    deadline = time.monotonic() + timeout
    recorded = from_topics(settings, job.since, job.until, settings.gateway_whatif_max_events, timeout)
    users = {e.user_id for e in recorded.events}
    unknown = sorted({c.user_id for c in job.changes} - users)
    if unknown:
        raise ValueError(f"set: no requests of user {unknown[0]!r} in the range (a change would change nothing)")
    book = limits_in_force(settings, new_book(job.default or default_limit(None, settings)), deadline)
    return recorded, candidate_book(book, job.limits, job.changes, job.tier_changes, job.document)


def _decide(recorded, book, job: _Job) -> WhatIfSummary:
    """In a worker thread: decide, compare, summarise."""
    replayed = decide_recorded(recorded, book)
    result, flagged = compare(recorded, replayed, job.top)
    changed = Counter()
    for transitions in result.by_user.values():
        changed.update(transitions)
    hurt = [HurtUser(user_id=user, allow_to_throttle=n, throttle_to_allow=result.by_user[user]["throttle->allow"],
                     changed=sum(result.by_user[user].values())) for user, n in result.hurt]
    default = book.default
    rules = RulesInfo(default=f"{default.limit}/{default.window:g}/{default.algorithm}", limits=len(book),
                      tiers=len(book.tiers()), changes=job.given)
    return WhatIfSummary(
        since=job.since, until=job.until, candidate=job.candidate, rules=rules, events=result.total,
        unrecorded=recorded.unrecorded, reproduced=result.reproduced, changed=len(result.changed),
        blocked_as_recorded=sum(reason in BLOCK_REASONS for reason in recorded.blocks.values()),
        transitions=dict(result.transitions.most_common()), changed_by_transition=dict(changed.most_common()), from_flagged=result.from_flagged,
        flagged_sources=len(flagged), hurt=hurt, seconds=0.0)


async def _work(settings, job: _Job, slot: _Slot) -> WhatIfSummary:
    started = time.perf_counter()
    reading = asyncio.ensure_future(asyncio.to_thread(_read, settings, job))
    try:
        recorded, book = await asyncio.wait_for(asyncio.shield(reading), settings.gateway_whatif_read_timeout + GRACE)
    except TimeoutError:
        slot.hold(reading)  # the thread goes on: the slot stays taken until it ends
        raise
    summary = await asyncio.to_thread(_decide, recorded, book, job)
    return summary.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})


def _slot(request: Request) -> _Slot:
    slot = getattr(request.app.state, "whatif_slot", None)
    if slot is None:
        slot = request.app.state.whatif_slot = _Slot()
    return slot


@router.post(
    "/whatif",
    response_model=WhatIfSummary,
    responses={
        **AUTH_ERRORS, **BODY_ERRORS,
        413: {"model": Problem, "description": "the body is too large, or the range holds more events than "
                                               "`gateway_whatif_max_events`"},
        422: {"model": Invalid, "description": "a bad body, range or candidate, an unknown user or tier, or no "
                                               "recorded requests in the range"},
        **read_unavailable("Kafka did not give the recorded traffic back in time"),
    },
    dependencies=[require("analyst", "admin")],
    summary="Decide recorded traffic again under candidate limits (bounded) and say what changes",
)
async def whatif(body: WhatIfBody, request: Request) -> WhatIfSummary:
    """The recorded requests of [since, until) and their decisions (the requests, decisions and ip-flags
    topics) decided again with the limiter's code under the limits in force (the reproduction check: every
    verdict should come out again), or a candidate. Bans are taken as recorded. Applies nothing."""
    settings = request.app.state.gateway.settings
    try:
        job = _job(body, settings.gateway_whatif_max_range)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    slot = _slot(request)
    if slot.held:
        raise HTTPException(429, "a what-if is running on this gateway (one at a time); try again later",
                            {"Retry-After": str(RETRY_AFTER)})
    work = asyncio.ensure_future(_work(settings, job, slot))
    slot.hold(work)
    try:
        return await asyncio.shield(work)  # a client gone does not stop the threads: the slot waits for them
    except TooManyEvents as exc:
        raise HTTPException(413, f"{exc} (gateway_whatif_max_events): narrow since and until") from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    except (TimeoutError, KafkaError, OSError, RuntimeError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
        logger.warning("POST /whatif: reading the recorded traffic failed: %s", reason)
        raise HTTPException(503, f"reading the recorded traffic from Kafka failed: {reason}",
                            {"Retry-After": str(RETRY_AFTER)}) from None
