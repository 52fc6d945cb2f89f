"""Bounded steps for stopping a process whose broker may be gone.

aiokafka waits for a broker without end in places: a consumer's commit looks for the group
coordinator until it answers, a producer's stop waits for its batches to be delivered. With the
broker gone, a stop that awaits them never ends and the process has to be killed (SIGKILL: no
state closed, no log line saying why). Every step of a stop that talks to Kafka is therefore given
a bound; past it the step is cancelled, a warning names it, and the stop goes on without it. With
the broker up the steps finish well inside their bounds, so a normal stop is unchanged.
"""

import asyncio
import logging
from typing import Awaitable

__all__ = ["STOP_STEP_TIMEOUT", "WIND_DOWN_TIMEOUT", "bounded"]

logger = logging.getLogger(__name__)

#: Seconds each step of a stop may take (a Kafka client stuck on a dead connection, a send waiting
#: for its batch to drain, a commit looking for its coordinator) before the stop goes on without it.
STOP_STEP_TIMEOUT = 3.0

#: Seconds a consumer loop is given to finish the batch in hand when told to stop. A batch takes
#: milliseconds with the broker up; a loop still busy after this waits on a broker that is gone.
WIND_DOWN_TIMEOUT = 5.0


async def bounded(stopping: str, what: str, step: Awaitable, timeout: float | None = None) -> bool:
    """Await ``step`` for at most ``timeout`` s (default :data:`STOP_STEP_TIMEOUT`); False when abandoned.

    ``stopping`` names what is being stopped and ``what`` the step, for the warning. A step that fails
    is abandoned too, so the steps after it still run: with the broker gone aiokafka's consumer stop
    raises the CancelledError of a fetch it had cancelled, which would otherwise end the whole stop
    silently (``mode`` takes a CancelledError for a stop that was meant to end). Only a cancellation of
    the caller itself propagates.
    """
    limit = STOP_STEP_TIMEOUT if timeout is None else timeout
    try:
        await asyncio.wait_for(step, limit)
    except (asyncio.TimeoutError, TimeoutError):
        logger.warning("stopping %s: %s took over %g s; going on without it", stopping, what, limit)
        return False
    except asyncio.CancelledError as exc:
        if asyncio.current_task().cancelling():
            raise
        failure: BaseException = exc
    except Exception as exc:  # noqa: BLE001 - whatever a client raises, the stop goes on
        failure = exc
    else:
        return True
    logger.warning("stopping %s: %s failed (%r); going on without it", stopping, what, failure)
    return False
