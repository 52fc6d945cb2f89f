"""A gateway without Kafka for unit tests of the HTTP layer: decisions from a list, writes applied at once."""

from collections.abc import Iterator, Sequence

import msgspec
from fastapi.testclient import TestClient

from ratewarden.gateway.app import create_app
from ratewarden.gateway.auth import new_user
from ratewarden.gateway.runtime import Gateway, Outcome, Request
from schemas.decisions import Decision
from schemas.events import RequestEvent
from schemas.flags import IpPartial
from streams.kafka_io import partition_for
from streams.settings import Settings

__all__ = ["FakeGateway", "FakeTopics", "api_client", "decision", "partial"]


def decision(**overrides) -> Decision:
    fields = dict(request_id="r", user_id="u", ip="192.0.2.1", request_type="t", verdict="allow", reason="within_limit",
                  limit=10, count=3, remaining=7, window_start=1200.0, reset_at=1260.0, retry_after=0.0, shadow=False,
                  ts_event=1217.25, ts_decided=1217.3)
    return Decision(**(fields | overrides))


class FakeGateway(Gateway):
    """No Kafka: writes apply to the tables at once; decisions come from ``verdicts`` (None: no decision)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.verdicts: list[Decision | None] = []
        self.events: list[RequestEvent] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def decide(self, user_id: str, ip: str, request_type: str, status: int | None = None) -> Outcome:
        event = RequestEvent(f"q{len(self.events)}", user_id, ip, request_type, self.clock(), status)
        self.events.append(event)
        made = self.verdicts.pop(0) if self.verdicts else decision()
        return Outcome(event, made and msgspec.structs.replace(made, request_id=event.request_id, status=status))

    async def decide_many(self, requests: Sequence[Request]) -> list[Outcome]:
        return [await self.decide(*request) for request in requests]

    async def write(self, table: str, key: str, value: bytes | None) -> None:
        self.tables[table]._apply(key.encode(), value)


def api_client(**settings) -> Iterator[TestClient]:
    """A TestClient of the whole app on a FakeGateway, with one user per submitting role (``key_for(role)``)."""
    settings = Settings(**({"gateway_max_body_bytes": 1024, "gateway_decision_timeout": 0.25, "default_limit": 50}
                           | settings))
    gateway = FakeGateway(settings)
    keys = {}
    for role in ("client", "service", "analyst", "admin"):
        user, keys[role] = new_user(f"{role}-1", role, 0.0)
        gateway.users.apply(user.user_id.encode(), msgspec.json.encode(user))
    with TestClient(create_app(settings, gateway)) as client:
        client.gateway, client.keys = gateway, keys
        client.key_for = lambda role: {"Authorization": f"Bearer {keys[role]}"}
        yield client


def partial(ip: str, start: float, source: int, requests: int = 10, users: int = 2, logins: int = 0,
            throttled: int = 0, blocked: int = 0, **fields) -> IpPartial:
    """A stage-1 partial of ``ip`` in the window starting at ``start``, as ``source`` saw it."""
    types = {"login": logins, "read": requests - logins} if logins else {"read": requests}
    return IpPartial(ip=ip, window_start=start, source=source, requests=requests, users=users, types=types,
                     throttled=throttled, blocked=blocked, first_seen=start, last_seen=start + 30, **fields)


class FakeTopics:
    """Topics without Kafka for the console's bounded tail reads: :meth:`tail` stands in for
    ``ratewarden.gateway.routes.reports._tail`` (same partitioner, ``partitions`` per topic)."""

    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self.records: dict[str, list[tuple[int, str | None, bytes]]] = {}  # topic -> (partition, key, value)
        self.reads: list[tuple[str, str | None]] = []

    def add(self, topic: str, key: str | None, value: bytes, partition: int | None = None) -> None:
        if partition is None:
            partition = 0 if key is None else partition_for(key, self.partitions)
        self.records.setdefault(topic, []).append((partition, key, value))

    async def tail(self, settings, topic: str, depth: int, key: str | None = None) -> list[tuple[int, bytes]]:
        self.reads.append((topic, key))
        wanted = None if key is None else partition_for(key, self.partitions)
        out: list[tuple[int, bytes]] = []
        for p in range(self.partitions):
            if wanted is not None and p != wanted:
                continue
            values = [(i, v) for i, (part, _, v) in enumerate(self.records.get(topic, [])) if part == p]
            out.extend(values[-depth:])
        return sorted(out)  # by offset, as streams.topic_tail.tail_records
