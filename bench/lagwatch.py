"""How far the limiter is behind the requests, sampled in a thread, and when it recovered from a fault.

Every ``interval`` s the watcher reads the end offsets of the requests topic and the offsets the
limiter's consumer group has committed. Under ``exactly_once`` the limiter commits its offsets in the
same transaction as the decisions (``send_offsets_to_transaction``), so a committed offset means
"every request before it has a committed decision"; the difference is the *lag*: requests published
and not yet decided-and-committed. While the broker is down no sample is taken.

The same sample also describes the limiter's group: its state and how many members it has.

Recovery (:meth:`LagWatch.recovered_at`), the definition the chaos soak reports: the first sample,
taken after the fault's last action (the restarted worker spawned, SIGCONT sent, the broker answering
again), from which on, for ``stable`` seconds without a break, (1) every request published before
that action has a committed decision in every partition, (2) the lag is at most ``bound`` requests
and (3) the group is stable with every worker in it. The time from the injection to that first sample
is the fault's recovery time. (3) and the ``stable`` period make a relapse count: a worker resumed
after SIGSTOP that finds itself fenced, exits and is restarted, or a rebalance that stalls decisions
again, moves the recovery to after it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from kafka import KafkaAdminClient

from bench.kafka_read import TopicReader

__all__ = ["LagSample", "LagWatch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LagSample:
    wall: float
    ends: dict[int, int]  # requests topic: next offset per partition
    committed: dict[int, int]  # the limiter group's committed offset per partition (0 if none)
    state: str = ""  # the group's state ("Stable", "PreparingRebalance", ...; "" if unknown)
    members: int = 0

    @property
    def lag(self) -> int:
        return sum(max(0, end - self.committed.get(p, 0)) for p, end in self.ends.items())


class LagWatch:
    """Samples the limiter's lag in a daemon thread; reconnects after a broker restart."""

    def __init__(self, bootstrap: str, topic: str, group: str, interval: float = 0.5) -> None:
        self.bootstrap, self.topic, self.group, self.interval = bootstrap, topic, group, interval
        self.samples: list[LagSample] = []
        self.errors = 0
        self._reader: TopicReader | None = None
        self._admin: KafkaAdminClient | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lagwatch", daemon=True)

    def __enter__(self) -> "LagWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._close()

    @property
    def latest(self) -> LagSample | None:
        return self.samples[-1] if self.samples else None

    def _close(self) -> None:
        for client in (self._reader, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing a client of a dead broker may fail any way
                    pass
        self._reader = self._admin = None

    def sample(self) -> LagSample:
        """One sample now (raises when the broker does not answer)."""
        if self._reader is None:
            self._reader = TopicReader(self.bootstrap, self.topic)
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5_000)
        ends = self._reader.ends()
        offsets = self._admin.list_group_offsets(self.group).get(self.group, {})
        committed = {tp.partition: meta.offset for tp, meta in offsets.items()
                     if tp.topic == self.topic and meta.offset >= 0}
        group = self._admin.describe_groups([self.group]).get(self.group, {})
        return LagSample(time.time(), ends, committed, group.get("group_state") or "", len(group.get("members") or ()))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # noqa: BLE001 - broker down or restarting: try again with new clients
                self.errors += 1
                logger.debug("lag sample failed: %r", exc)
                self._close()
            self._stop.wait(self.interval)

    def recovered_at(self, after: float, bound: int, members: int, stable: float = 10.0) -> float | None:
        """Wall time of the first sample after ``after`` that starts a recovery (module docstring), or None."""
        baseline: dict[int, int] | None = None
        since: float | None = None
        previous = after
        for sample in self.samples[self._first_after(after):]:
            if baseline is None:
                baseline = sample.ends  # what was published when the fault's last action was done
            healthy = (sample.lag <= bound and sample.state == "Stable" and sample.members == members
                       and all(sample.committed.get(p, 0) >= end for p, end in baseline.items()))
            if not healthy or sample.wall - previous > 5.0:  # a gap: the broker did not answer
                since = None
            if healthy and since is None:
                since = sample.wall
            if since is not None and sample.wall - since >= stable:
                return since
            previous = sample.wall
        return None

    def caught_up(self) -> bool:
        """The latest sample shows every published request decided and committed."""
        latest = self.latest
        return latest is not None and latest.lag == 0 and time.time() - latest.wall < 5 * self.interval + 5

    def _first_after(self, wall: float) -> int:
        samples, lo, hi = self.samples, 0, len(self.samples)
        while lo < hi:
            mid = (lo + hi) // 2
            if samples[mid].wall < wall:
                lo = mid + 1
            else:
                hi = mid
        return lo
