"""GET /reports/abuse: the newest per-window abuse reports the analytics publish on ``abuse-reports``.

Each read opens a short-lived aiokafka consumer (no group, nothing committed), reads the last
:data:`SCAN` records of the topic and closes it; the whole read is bounded by :data:`READ_TIMEOUT`
(503 after it) and at most :data:`READERS` reads run at once. Records that are not valid reports are
left out and counted, never a 500.
"""

import asyncio
import logging

import msgspec
from aiokafka.errors import KafkaError
from fastapi import APIRouter, HTTPException, Query, Request

from ratewarden.abuse_reports import current_reports
from ratewarden.gateway.auth import require
from ratewarden.gateway.models import AbuseReportList
from ratewarden.gateway.routes import AUTH_ERRORS, read_unavailable
from schemas.flags import AbuseReport
from streams.settings import Settings
from streams.topic_tail import tail_records

__all__ = ["READ_TIMEOUT", "ReportsUnavailable", "read_abuse_reports", "read_tail", "reader_slots", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["reports"])

#: Seconds one read of the topic may take, from waiting for a reader slot to the last record.
READ_TIMEOUT = 5.0
#: Records read back from the end of each partition: the reports the newest ones are chosen from.
SCAN = 500
#: Reads of the topic at once per app (each is a Kafka connection); more wait for a slot.
READERS = 4
_decode = msgspec.json.Decoder(AbuseReport).decode


class ReportsUnavailable(Exception):
    """Kafka did not give a topic's records (the reports, the advice) back in time."""


def reader_slots(request: Request, name: str, count: int) -> asyncio.Semaphore:
    """The app's ``count`` reader slots called ``name`` (per app: a semaphore belongs to the event loop that
    first waits on it)."""
    readers = getattr(request.app.state, name, None)
    if readers is None:
        readers = asyncio.Semaphore(count)
        setattr(request.app.state, name, readers)
    return readers


async def read_tail(settings: Settings, topic: str, depth: int, timeout: float,
                    readers: asyncio.Semaphore) -> list[tuple[int, bytes]]:
    """``(offset, value)`` of the last ``depth`` records of ``topic``, oldest first, read in a reader slot
    within ``timeout`` seconds; :class:`ReportsUnavailable` otherwise."""
    try:
        async with asyncio.timeout(timeout):
            async with readers:
                values = await tail_records(settings, topic, depth)
    except (TimeoutError, KafkaError, OSError, RuntimeError) as exc:
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else repr(exc)
        raise ReportsUnavailable(f"reading {topic} failed: {reason}") from None
    return values


async def read_abuse_reports(
    settings: Settings,
    limit: int,
    since: float | None = None,
    timeout: float | None = None,
    readers: asyncio.Semaphore | None = None,
) -> tuple[list[AbuseReport], int]:
    """The newest ``limit`` reports (of windows starting at or after ``since``), newest first, and how many
    records read were not valid reports. Raises :class:`ReportsUnavailable` after ``timeout`` seconds
    (default :data:`READ_TIMEOUT`)."""
    topic = settings.abuse_reports_topic
    timeout = READ_TIMEOUT if timeout is None else timeout
    values = await read_tail(settings, topic, SCAN, timeout, asyncio.Semaphore(1) if readers is None else readers)
    reports: list[AbuseReport] = []
    skipped = 0
    for _, value in values:
        try:
            report = _decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):  # also NaN, infinities, out-of-range numbers
            skipped += 1
            continue
        if since is None or report.window_start >= since:
            reports.append(report)
    if skipped:
        logger.warning("%s: %d records are not valid abuse reports", topic, skipped)
    return current_reports(reports)[::-1][:limit], skipped


@router.get(
    "/reports/abuse",
    response_model=AbuseReportList,
    responses={**AUTH_ERRORS, **read_unavailable()},
    dependencies=[require("analyst", "admin")],
    summary="The newest per-window abuse reports of the analytics, newest first",
)
async def abuse_reports(
    request: Request,
    limit: int = Query(10, ge=1, le=100, description="how many reports"),
    since: float | None = Query(None, ge=0, le=1e11, allow_inf_nan=False,
                                description="only windows starting at or after this event time (epoch seconds)"),
) -> AbuseReportList:
    """One report per window and analytics shard (a correction replaces the report it corrects): IPs,
    requests, refused requests, the flagged IPs with score and rules, and the population statistics.
    Chosen among the newest records of the topic."""
    try:
        settings = request.app.state.gateway.settings
        reports, skipped = await read_abuse_reports(settings, limit, since, readers=reader_slots(request, "abuse_report_readers", READERS))
    except ReportsUnavailable as exc:
        logger.warning("GET /reports/abuse: %s", exc)
        raise HTTPException(503, str(exc), {"Retry-After": "1"}) from None
    return AbuseReportList(reports=[msgspec.to_builtins(r) for r in reports], skipped=skipped)
