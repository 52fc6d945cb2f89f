"""Per-address limits of ``POST /requests``: the ``remote_address`` rules of the ``ratewarden`` domain.

The request stream is keyed by user, so no limiter partition sees all of one address's requests.
The gateway counts each request's address where that count is exact: on the rate limit service's
descriptor counters (``rls-hits``, keyed by the address, one owner per counter; the same
:class:`ratewarden.rls.engine.RlsEngine` that answers Envoy). A request over its address's limit is
still published, carrying the refusal in a header (``schemas.refusals``), so the limiter decides it
— a throttle with reason ``rate_limited_address``, counted against no user limit — and it is in
``decisions`` like every request. Every checked request counts against its address, as every
descriptor of an Envoy call counts, also when a user limit throttles it later.

The cost is a round trip to the counters before the usual one, only for requests whose address a
rule matches; without ``remote_address`` rules nothing is checked.
"""

import asyncio
from collections.abc import Sequence

from agents.event_rules import ADDRESS_KEY, EVENTS_DOMAIN, EventRules
from ratewarden.rls.engine import RlsEngine
from schemas.refusals import AddressRefusal, refusal_header

__all__ = ["AddressLimits"]


class AddressLimits:
    """``stamp``: called for the gateway's reply headers (known once its waiter has started)."""

    def __init__(self, rules: EventRules, rls: RlsEngine, stamp) -> None:
        self.rules, self.rls, self.stamp = rules, rls, stamp

    def __bool__(self) -> bool:
        return self.rules.addresses

    async def headers(self, ips: Sequence[str]) -> list[list | None]:
        """For each request's client address: the record headers of a refused request, None for the others."""
        out: list[list | None] = [None] * len(ips)
        checked = [(i, limit) for i, ip in enumerate(ips) if (limit := self.rules.address(ip)) is not None]
        if not checked:
            return out
        results = await asyncio.gather(*(self.rls.should_rate_limit(EVENTS_DOMAIN, [[(ADDRESS_KEY, ips[i])]], 1)
                                         for i, _ in checked))
        for (i, limit), result in zip(checked, results):
            status = result.statuses[0]
            if result.overall != "OVER_LIMIT" or status.requests_per_unit is None:
                continue
            count = status.count if status.count is not None else status.requests_per_unit + 1  # undecided, closed
            refusal = AddressRefusal(limit.rule, status.requests_per_unit, limit.window, count,
                                     float(status.reset_after or 0))
            out[i] = [*self.stamp(), refusal_header(refusal)]
        return out
