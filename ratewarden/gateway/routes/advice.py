"""GET /advice: the latest limit advice ``ratewarden advise --publish`` wrote on the advice topic.

Read as ``GET /reports/abuse`` reads its topic: a short-lived consumer (no group, nothing committed)
takes the last :data:`SCAN` records, within :data:`READ_TIMEOUT` seconds (503 after), at most
:data:`READERS` reads at once. The newest run record (``schemas.advice``) and the tier and user
records made with it are the answer; records of older runs are stale and left out. Nothing is applied.
"""

import logging

import msgspec
from fastapi import APIRouter, HTTPException, Query, Request

from ratewarden.gateway.auth import require
from ratewarden.gateway.models_whatif import AdviceInfo
from ratewarden.gateway.routes import AUTH_ERRORS, NOT_FOUND, read_unavailable
from ratewarden.gateway.routes.reports import ReportsUnavailable, read_tail, reader_slots
from schemas.advice import AdviceRecord, AdviceRun, LimitAdvice

__all__ = ["READ_TIMEOUT", "latest_advice", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["advice"])

#: Seconds one read of the topic may take, from waiting for a reader slot to the last record.
READ_TIMEOUT = 5.0
#: Records read back from the end of the topic: a run of more tiers and users than this is cut.
SCAN = 200_000
#: Reads of the topic at once per app.
READERS = 2
_decode = msgspec.json.Decoder(AdviceRecord).decode


def latest_advice(values: list[tuple[int, bytes]]) -> tuple[AdviceRun | None, list[LimitAdvice], int]:
    """The newest run among ``(offset, value)`` records of the advice topic, its tier and user advice (the
    newest record of each), and how many records were not valid advice (left out)."""
    run, advice, skipped = None, {}, 0
    for _, value in sorted(values, key=lambda item: item[0]):
        try:
            record = _decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            skipped += 1
            continue
        if isinstance(record, AdviceRun):
            if run is None or record.made_at >= run.made_at:
                run = record
        else:
            advice[record.kind, record.name] = record
    current = [] if run is None else [a for a in advice.values() if a.made_at == run.made_at]
    return run, sorted(current, key=lambda a: (a.kind, a.name)), skipped


@router.get(
    "/advice",
    response_model=AdviceInfo,
    responses={**AUTH_ERRORS, **NOT_FOUND, **read_unavailable()},
    dependencies=[require("analyst", "admin")],
    summary="The latest limit advice per tier and per user (published by `ratewarden advise --publish`)",
)
async def advice(
    request: Request,
    users: int = Query(1_000, ge=0, le=10_000, description="users to list (by name)"),
) -> AdviceInfo:
    """The policy, when the advice was made, every tier's advised limit and the what-if check's figures,
    and the users' own advice. A recommendation: nothing applies it."""
    settings = request.app.state.gateway.settings
    topic = settings.advice_topic
    try:
        values = await read_tail(settings, topic, SCAN, READ_TIMEOUT, reader_slots(request, "advice_readers", READERS))
    except ReportsUnavailable as exc:
        logger.warning("GET /advice: %s", exc)
        raise HTTPException(503, str(exc), {"Retry-After": "1"}) from None
    run, current, skipped = latest_advice(values)
    if skipped:
        logger.warning("%s: %d records are not valid advice", topic, skipped)
    if run is None:
        raise HTTPException(404, f"no advice has been published on {topic}: run `ratewarden advise --publish`")
    builtins = msgspec.to_builtins
    user_advice = [builtins(a) for a in current if a.kind == "user"]
    return AdviceInfo(run=builtins(run), tiers=[builtins(a) for a in current if a.kind == "tier"],
                      users=user_advice[:users], users_total=len(user_advice))
