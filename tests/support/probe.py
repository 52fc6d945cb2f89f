"""Requests replayed through a running worker in bursts of their own windows, for tests of limits that change live."""

import time

from schemas.events import RequestEvent

__all__ = ["Probe", "verdicts"]

T0 = 1_732_899_960.0  # a multiple of 60: the start of a window


class Probe:
    """Replays requests in windows of their own (one minute apart), so each burst starts from zero."""

    def __init__(self, pipeline) -> None:
        self.pipeline, self.ts, self.n = pipeline, T0, 0

    def burst(self, user: str, n: int, request_type: str = "read"):
        self.ts += 60.0
        events = [RequestEvent(f"r{self.n}-{i}", user, "203.0.113.7", request_type, self.ts + i * 0.01)
                  for i in range(n)]
        self.n += 1
        return self.pipeline.replay(events)

    def until(self, user: str, limit: int, timeout: float = 90.0) -> None:
        """Wait until the worker decides ``user``'s requests under ``limit`` (it follows the topic live)."""
        deadline = time.monotonic() + timeout
        while self.burst(user, 1)[0].limit != limit:
            assert time.monotonic() < deadline, f"{user} never got limit {limit}"


def verdicts(decisions) -> list[tuple[str, str]]:
    return [(d.verdict, d.reason) for d in decisions]
