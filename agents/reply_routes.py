"""The limiter's side of routed replies (the contract is in ``schemas.replies``): header stamps to partitions.

Gateways stamp every request with the same few header values, so each distinct stamp is parsed once
and remembered (at most :data:`MAX_REMEMBERED` of them: a producer sending ever new stamps cannot
grow the map without bound). A refused stamp costs the request its reply, never its decision: it is
counted (``refused``, and the ``ratewarden_replies_refused_total`` metric) and logged, the first
time and then every :data:`LOG_EVERY`-th time. The answers of one fetched batch are gathered per reply
partition and written as few records (:meth:`ReplyRoutes.write`; the record format is in
``schemas.replies``).
"""

import logging

from schemas.replies import reply_partition, reply_values
from streams import metrics

__all__ = ["ReplyRoutes"]

logger = logging.getLogger(__name__)

MAX_REMEMBERED = 1_024
LOG_EVERY = 10_000


class ReplyRoutes:
    def __init__(self, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, partitions
        self.routed = self.refused = 0
        self._known: dict[tuple, int | str | None] = {}

    def partition(self, headers) -> int | None:
        """The partition to write this request's reply to, or None (no reply asked, or refused)."""
        stamp = tuple(headers)
        route = self._known.get(stamp, False)
        if route is False:
            if len(self._known) >= MAX_REMEMBERED:
                self._known.clear()
            route = self._known[stamp] = reply_partition(headers, self.topic, self.partitions)
        if type(route) is int:
            self.routed += 1
            return route
        if route is not None:
            self.refused += 1
            metrics.REPLIES_REFUSED.inc()
            if self.refused % LOG_EVERY == 1:
                logger.warning("no reply for a request (%d refused so far): %s", self.refused, route)
        return None

    async def write(self, sender, answers: dict[int, list[bytes]], headers=None) -> None:
        """Write ``answers`` (encoded answers per reply partition, in order) as reply records through ``sender``."""
        for partition, encoded in answers.items():
            for value in reply_values(encoded):
                await sender.add(self.topic, partition, None, value, headers)
