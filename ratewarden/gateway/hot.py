"""The hot routes: ``POST /requests``, ``POST /requests/batch`` and ``POST /json`` served as plain ASGI, before FastAPI.

FastAPI's routing, dependency injection and response machinery cost more per request than the
whole decision round trip (docs/gateway.md). :class:`HotRoutes` wraps the FastAPI app: these two
routes it answers itself with raw ``http.response.*`` messages and msgspec-encoded bodies; every
other request (and the lifespan) goes to FastAPI, which still declares both routes so
``/openapi.json`` documents them. The order of checks is: body size (413, before authentication:
nothing is read past the limit), the key (429 for an address refused for guessing, 401), the role
(403), then the body (400 not UTF-8, 422 invalid) and ``user_id``/``ip`` (403 for client keys).
``POST /json`` is the rate limit service's HTTP form (envoyproxy/ratelimit's; ``ratewarden.rls.json_api``),
for service and admin keys.
"""

import logging
from typing import Any

import msgspec
from fastapi import FastAPI, HTTPException

from ratewarden.gateway.auth import authenticate, bearer_key, check_role
from ratewarden.gateway.auth_limiter import AuthLimiter
from ratewarden.gateway.bodies import Invalid
from ratewarden.gateway.inline import ON_BEHALF, SUBMITTERS, Inline, Reply
from ratewarden.gateway.runtime import Gateway
from ratewarden.rls.json_api import json_call
from ratewarden.rls.validation import Bounds

__all__ = ["HotRoutes", "reply_of"]

logger = logging.getLogger(__name__)

_JSON = (b"content-type", b"application/json")
_encode = msgspec.json.Encoder().encode


class TooLarge(Exception):
    """The body is over the route's limit."""


def reply_of(exc: Exception) -> Reply:
    """The answer to a refused request, as FastAPI's handlers would give it."""
    if isinstance(exc, Invalid):
        return 422, {"detail": exc.detail()}, []
    assert isinstance(exc, HTTPException)
    fields = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
    return exc.status_code, {"detail": exc.detail}, fields


class HotRoutes:
    """The gateway's ASGI app: the two hot routes, then the FastAPI ``app`` for everything else."""

    def __init__(self, app: FastAPI, gateway: Gateway, inline: Inline, limiter: AuthLimiter) -> None:
        settings = gateway.settings
        self.app, self.gateway, self.inline, self.limiter = app, gateway, inline, limiter
        self.routes = {
            "/requests": (inline.submit, settings.gateway_max_body_bytes, SUBMITTERS),
            "/requests/batch": (inline.batch, settings.gateway_batch_max_body_bytes, SUBMITTERS),
            "/json": (self._rls_json, settings.gateway_max_body_bytes, ON_BEHALF),
        }
        self._rls_bounds = Bounds.from_settings(settings)
        self._addresses: dict[str, str] = {}  # peer -> client IP, for peers without X-Forwarded-For

    @property
    def state(self):
        """The FastAPI app's state (``gateway``, ``auth_limiter``), as tests and tools reach it."""
        return self.app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.routes.get(scope["path"])
            if route is not None:
                return await self._serve(scope, receive, send, *route)
        await self.app(scope, receive, send)

    async def _rls_json(self, caller, body: bytes, content_type, address) -> Reply:
        status, content = await json_call(self.gateway.rls, body, self._rls_bounds)
        return status, msgspec.Raw(content), []

    async def _serve(self, scope, receive, send, handler, max_bytes: int, roles) -> None:
        key = content_type = length = None
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                key = key or value
            elif name == b"content-type":
                content_type = content_type or value
            elif name == b"content-length":
                length = value
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
        peer = scope.get("client")
        address = lambda: self._address(peer[0] if peer else None, forwarded)  # noqa: E731
        try:
            body = await _read(receive, max_bytes, length)
            if body is None:
                return  # the client went away
            caller = authenticate(self.limiter, self.gateway.users, bearer_key(key and key.decode("latin-1")), address)
            check_role(caller, roles)
            reply = await handler(caller, body, content_type, address)
        except TooLarge:
            detail = {"detail": f"request body is larger than {max_bytes} bytes"}
            reply = 413, detail, [(b"connection", b"close")]
        except (HTTPException, Invalid) as exc:
            reply = reply_of(exc)
        await respond(send, reply)

    def _address(self, peer: str | None, forwarded: list[str]) -> str:
        """The client IP (``Gateway.client_ip``); without X-Forwarded-For remembered per peer (bounded)."""
        if forwarded or peer is None:
            return self.gateway.client_ip(peer, forwarded)
        ip = self._addresses.get(peer)
        if ip is None:
            if len(self._addresses) >= 10_000:
                self._addresses.clear()
            ip = self._addresses[peer] = self.gateway.client_ip(peer, forwarded)
        return ip


async def _read(receive, max_bytes: int, length: bytes | None) -> bytes | None:
    """The whole body; TooLarge past ``max_bytes`` (announced or streamed); None if the client left."""
    if length is not None and (not length.isdigit() or int(length) > max_bytes):
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(send, reply: Reply) -> None:
    """One JSON answer as raw ASGI messages."""
    status, body, fields = reply
    content: bytes = _encode(body)
    headers: list[Any] = [_JSON, (b"content-length", str(len(content)).encode()), *fields]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
