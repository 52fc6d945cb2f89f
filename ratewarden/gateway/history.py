"""Reading a user's history from the worker that holds its partition (see agents/history.py)."""

import asyncio
import logging
import time

import httpx
import msgspec

from schemas.users import HistoryOwner
from streams.history import partition_for
from streams.settings import Settings
from streams.tables import ControlTable

__all__ = ["HistoryRouter", "HistoryUnavailable"]

logger = logging.getLogger(__name__)


class HistoryUnavailable(Exception):
    """No worker answered the read within the gateway's history timeout."""


class HistoryRouter:
    """Follows the ``history-owners`` table and forwards each read to the partition's owner."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.owners: dict[int, HistoryOwner] = {}
        self.partitions = settings.partitions
        self.client: httpx.AsyncClient | None = None
        decode = msgspec.json.Decoder(HistoryOwner).decode

        def apply(key: bytes, value: bytes | None) -> None:
            if value is None:
                self.owners.pop(int(key), None)
            else:
                owner = decode(value)
                self.owners[owner.partition] = owner

        self.table = ControlTable(settings, settings.history_owners_topic, apply)
        token = settings.history_token
        self._headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}

    async def start(self, partitions: int) -> None:
        self.partitions = partitions
        self.client = httpx.AsyncClient(headers=self._headers)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def read(self, user_id: str, limit: int, before: float | None) -> dict:
        """The worker's answer (``user_id``, ``requests`` newest first, ``next_before``), retried until the timeout."""
        partition = partition_for(user_id, self.partitions)
        deadline = time.monotonic() + self.settings.gateway_history_timeout
        problem = f"no worker has announced partition {partition}"
        while True:
            left = deadline - time.monotonic()
            owner = self.owners.get(partition)
            if owner is not None and left > 0:
                params = {"user_id": user_id, "limit": limit, "wait": round(left, 3)}
                if before is not None:
                    params["before"] = repr(before)
                try:
                    answer = await self.client.get(f"{owner.url}/history/{partition}", params=params, timeout=left + 1)
                    if answer.status_code == 200:
                        return answer.json()
                    problem = f"{owner.url} answered {answer.status_code}: {answer.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    problem = f"{owner.url}: {exc!r}"
            if time.monotonic() >= deadline:
                raise HistoryUnavailable(problem)
            logger.debug("history of partition %d: %s; retrying", partition, problem)
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
