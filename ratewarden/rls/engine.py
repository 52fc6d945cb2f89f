"""The rate limit service's engine in the gateway: rules matched here, counters kept by the workers.

For one ``ShouldRateLimit`` call it resolves every descriptor against the domain's rules
(:class:`agents.descriptor_rules.RuleBook`, fed from the limits topic), publishes one
:class:`schemas.descriptors.DescriptorHit` per limited descriptor to ``rls-hits`` — keyed by its
counter, so the worker that owns that counter answers it — stamped with this gateway's reply
partition, and waits for every answer (one :class:`ratewarden.gateway.waiting.Waiting` per call).
Descriptors without a limit are answered here at once, as the reference does. An answer that does
not come within ``rls_decision_timeout`` is answered by ``rls_fail_mode`` (``open``: OK, ``closed``:
OVER_LIMIT), counted and marked undecided.
"""

import asyncio
import logging
import math
from operator import attrgetter
from typing import Callable, Sequence

from agents.descriptor_rules import RuleBook
from ratewarden.gateway.outbox import Outbox
from ratewarden.gateway.waiter import DecisionWaiter
from ratewarden.gateway.waiting import Waiting
from ratewarden.rls.metrics import UNDECIDED, UNKNOWN_DOMAIN
from ratewarden.rls.results import MAX_REMAINING, RlsResult, Status
from schemas.descriptors import DescriptorHit
from streams.settings import Settings

__all__ = ["RlsEngine"]

logger = logging.getLogger(__name__)


#: Hit batches in flight at once. One, not the HTTP outbox's two: gRPC calls arrive one per loop turn,
#: not in bursts, so with two flights each carried a call or two and every hop paid per request;
#: ``bench/rls_bench.py`` at ghz -c 32: 1 flight 2,730-2,880 calls/s, 0.54-0.59 ms of CPU per call;
#: 2 flights 1,960-2,490, 0.67-0.86 ms; 4 flights 1,870, 0.92 ms.
RLS_IN_FLIGHT = 1

_NO_LIMIT = Status("OK")
_UNLIMITED = Status("OK", remaining=MAX_REMAINING)


class RlsEngine:
    def __init__(self, settings: Settings, rules: RuleBook, clock: Callable[[], float],
                 new_id: Callable[[], str]) -> None:
        self.settings, self.rules, self.clock, self.new_id = settings, rules, clock, new_id
        self.timeout = settings.rls_decision_timeout
        self.failure_code = "OK" if settings.rls_fail_mode == "open" else "OVER_LIMIT"
        self.outbox: Outbox | None = None
        self.waiter: DecisionWaiter | None = None
        self.unknown_domains = 0

    def start(self, producer, partitions: int, waiter: DecisionWaiter) -> None:
        """Publish through ``producer`` to the ``partitions`` of ``rls-hits``; answers come through ``waiter``."""
        self.waiter = waiter
        self.outbox = Outbox(producer, self.settings.rls_hits_topic, partitions, waiter.stamp,
                             key_of=attrgetter("counter"), max_in_flight=RLS_IN_FLIGHT)
        waiter.on_answer = self.outbox.landed

    async def stop(self) -> None:
        if self.outbox is not None:
            await self.outbox.stop()

    async def should_rate_limit(self, domain: str, descriptors: Sequence[Sequence[tuple[str, str]]],
                                hits: int | Sequence[int]) -> RlsResult:
        """``hits``: for every descriptor, or one per descriptor (0: check without counting)."""
        resolved = self.rules.resolve(domain, descriptors)
        statuses: list[Status] = [_UNLIMITED if r.unlimited else _NO_LIMIT for r in resolved]
        limited = [i for i, r in enumerate(resolved) if r.limit is not None]
        if limited:
            await self._count(domain, resolved, limited, hits, statuses)
        elif domain not in self.rules:
            UNKNOWN_DOMAIN.inc()
            self.unknown_domains += 1
            if self.unknown_domains % 1_000 == 1:  # the first, then every 1,000th
                logger.warning("rate limit call for domain %r, which has no rules: answered OK", domain)
        overall = "OK"
        for status in statuses:
            if status.code == "OVER_LIMIT":
                overall = "OVER_LIMIT"
                break
        return RlsResult(overall, statuses)

    async def _count(self, domain: str, resolved, limited: list[int], hits, statuses: list[Status]) -> None:
        """Publish the limited descriptors' hits and fill in their statuses from the answers."""
        call_id, ts = self.new_id(), self.clock()
        waiting = Waiting(len(limited))
        expect, put = self.waiter.expect, self.outbox.put
        ids = []
        each = None if isinstance(hits, int) else hits
        for slot, i in enumerate(limited):
            match = resolved[i]
            limit = match.limit
            hit = DescriptorHit(f"{call_id}/{i}", domain, match.counter, limit.rule, limit.requests_per_unit,
                                limit.window, limit.algorithm, limit.shadow, limit.name,
                                hits if each is None else each[i], ts, limit.burst)
            expect(hit.request_id, waiting, slot)
            put(hit, waiting, slot)
            ids.append(hit.request_id)
        timer = asyncio.get_running_loop().call_later(self.timeout, waiting.expire)
        try:
            await waiting.done
        finally:
            timer.cancel()
            for request_id in ids:
                self.waiter.forget(request_id)
        for i, answer in zip(limited, waiting.decisions):
            limit = resolved[i].limit
            if answer is None:
                UNDECIDED.inc()
                statuses[i] = Status(self.failure_code, limit.requests_per_unit, limit.unit, limit.name, 0, None, False)
            else:
                statuses[i] = Status(answer.code, limit.requests_per_unit, limit.unit, limit.name, answer.remaining,
                                     math.ceil(answer.reset_after), True, answer.count)
