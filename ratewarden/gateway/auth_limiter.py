"""Failed authentications per client address: past a number of wrong keys in a window, refuse the address.

Without this, guessing API keys costs an attacker nothing but requests. An address that sends
``max_failures`` unknown keys within ``window`` seconds (counted from its first failure) is refused
for ``window`` seconds from the failure that reached the limit, whatever key it sends then, so a key
guessed right in that time is worth nothing either.

The state is two insertion-ordered maps, each capped at ``max_addresses``: failures being counted
and addresses being refused. Every window has the same length, so insertion order is expiry order;
expired entries are dropped from the front as new ones come in, and when a map is full of live
entries its oldest is evicted (counted in ``evicted``: an attacker spraying from more addresses than
the cap can make the limiter forget some of them, but not grow it).

Time comes from the injected ``clock`` (monotonic seconds), so tests pass explicit times.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from ratewarden.gateway.net import in_networks, parse_networks

__all__ = ["AuthLimiter"]

logger = logging.getLogger(__name__)


class AuthLimiter:
    """Counts failed authentications per address and refuses the addresses that reach the limit.

    ``max_failures`` 0 turns it off. ``exempt`` is a comma-separated list of IPs or CIDRs that are
    never counted (monitoring, a partner's egress). ``on_evict`` is called once per evicted entry.
    """

    def __init__(self, max_failures: int, window: float, exempt: str = "", max_addresses: int = 100_000,
                 clock: Callable[[], float] = time.monotonic, on_evict: Callable[[], None] | None = None) -> None:
        if max_failures < 0 or window <= 0 or max_addresses < 1:
            raise ValueError("need max_failures >= 0, window > 0 and max_addresses >= 1")
        self.max_failures, self.window, self.max_addresses = max_failures, window, max_addresses
        self.exempt = parse_networks(exempt)
        self.clock = clock
        self.evicted = 0
        self._on_evict = on_evict
        #: address -> [end of its counting window, failures so far]
        self.failures: OrderedDict[str, list[float]] = OrderedDict()
        #: address -> [end of its refusal, failures that caused it]; empty almost always, which is all
        #: the hot path checks
        self.refused: OrderedDict[str, list[float]] = OrderedDict()

    def is_exempt(self, ip: str) -> bool:
        return in_networks(ip, self.exempt)

    def retry_after(self, ip: str) -> float | None:
        """Seconds until ``ip`` is served again, or None if it is not refused."""
        if not self.refused:
            return None
        now = self.clock()
        self._expire(self.refused, now)
        entry = self.refused.get(ip)
        return None if entry is None else entry[0] - now

    def failed(self, ip: str) -> float | None:
        """Record one failed authentication from ``ip``; the seconds of its refusal if this one reached the limit."""
        if self.max_failures == 0 or (self.exempt and self.is_exempt(ip)):
            return None
        now = self.clock()
        entry = self.failures.get(ip)
        if entry is None or entry[0] <= now:
            self._expire(self.failures, now)
            self.failures.pop(ip, None)
            self._make_room(self.failures)
            entry = self.failures[ip] = [now + self.window, 0]
        entry[1] += 1
        if entry[1] < self.max_failures:
            return None
        del self.failures[ip]
        self._expire(self.refused, now)
        self.refused.pop(ip, None)  # re-inserted at the end: insertion order stays expiry order
        self._make_room(self.refused)
        self.refused[ip] = [now + self.window, entry[1]]
        logger.warning("%s refused for %.0f s after %d failed authentications", ip, self.window, self.max_failures)
        return self.window

    @staticmethod
    def _expire(entries: OrderedDict[str, list[float]], now: float) -> None:
        """Drop the entries whose time has passed; they are all at the front."""
        while entries and next(iter(entries.values()))[0] <= now:
            entries.popitem(last=False)

    def _make_room(self, entries: OrderedDict[str, list[float]]) -> None:
        while len(entries) >= self.max_addresses:
            entries.popitem(last=False)
            self.evicted += 1
            if self._on_evict is not None:
                self._on_evict()

    def __len__(self) -> int:
        """Addresses tracked (counted or refused): what the caps bound."""
        return len(self.failures) + len(self.refused)
