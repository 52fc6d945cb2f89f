"""API keys and roles.

Keys are 256 random bits (``secrets.token_urlsafe``), shown once when a user is created and stored
only as a SHA-256 hash; a presented key is hashed and compared with ``hmac.compare_digest``. (A slow
hash such as scrypt buys nothing for random keys of this length and would cost every request.)
A missing, unknown or revoked key is 401; a known key whose role is not allowed is 403.

Unknown keys are counted per client address (``AuthLimiter``, settings ``gateway_auth_*``): an
address past the limit gets 429 with ``Retry-After`` on every endpoint that takes a key, a valid key
included, until its window ends. Keys are never logged.
"""

import hashlib
import hmac
import math
import secrets
from collections.abc import Callable

import msgspec
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ratewarden.gateway.auth_limiter import AuthLimiter
from ratewarden.gateway.metrics import AUTH_EVICTIONS, AUTH_FAILURES, AUTH_REFUSALS
from schemas.users import Role, User
from streams.settings_sections import GatewaySettings

__all__ = [
    "UserBook", "auth_limiter", "authenticate", "bearer_key", "caller", "check_role", "client_address", "hash_key",
    "new_user", "require",
]

_decode_user = msgspec.json.Decoder(User).decode


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_user(user_id: str, role: Role, now: float) -> tuple[User, str]:
    """A validated user record and its API key (the only time the key exists in clear)."""
    key = "rw_" + secrets.token_urlsafe(32)
    user = User(user_id=user_id, role=role, key_hash=hash_key(key), created_at=now)
    try:
        return msgspec.convert(msgspec.to_builtins(user), User), key
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid user: {exc}") from None


class UserBook:
    """The users table, fed by the compacted ``users`` topic (``apply``), indexed by id and key hash."""

    #: Known keys remembered in clear, so a request pays a dict lookup, not a SHA-256 (bounded; emptied
    #: on every change of the table, so a revoked key stops working at once). Unknown keys are not kept.
    MAX_CACHED = 10_000

    def __init__(self) -> None:
        self._by_id: dict[str, User] = {}
        self._by_hash: dict[str, User] = {}
        self._by_key: dict[str, User] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, user_id: str) -> User | None:
        return self._by_id.get(user_id)

    def apply(self, key: bytes, value: bytes | None) -> None:
        """One record of the ``users`` topic; ``None`` (a tombstone) revokes the user and its key."""
        self._by_key.clear()
        old = self._by_id.pop(key.decode(), None)
        if old is not None:
            self._by_hash.pop(old.key_hash, None)
        if value is not None:
            user = _decode_user(value)
            self._by_id[user.user_id] = self._by_hash[user.key_hash] = user

    def authenticate(self, key: str) -> User | None:
        user = self._by_key.get(key)
        if user is not None:
            return user
        digest = hash_key(key)
        user = self._by_hash.get(digest)
        if user is None or not hmac.compare_digest(user.key_hash.encode(), digest.encode()):
            return None
        if len(self._by_key) >= self.MAX_CACHED:
            self._by_key.clear()
        self._by_key[key] = user
        return user


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer KEY`")


def client_address(request: Request) -> str:
    """The client IP of ``request`` as the gateway resolves it (``X-Forwarded-For`` only from trusted proxies)."""
    peer = request.client.host if request.client else None
    return request.app.state.gateway.client_ip(peer, request.headers.getlist("x-forwarded-for"))


def auth_limiter(settings: GatewaySettings) -> AuthLimiter:
    """The failed-key limiter of one gateway app (``create_app`` keeps it in ``app.state.auth_limiter``)."""
    return AuthLimiter(
        settings.gateway_auth_max_failures, settings.gateway_auth_failure_window, settings.gateway_auth_exempt_cidrs,
        settings.gateway_auth_max_addresses, on_evict=AUTH_EVICTIONS.inc,
    )


def _refusal(ip: str, seconds: float) -> HTTPException:
    AUTH_REFUSALS.inc()
    wait = max(1, math.ceil(seconds))
    return HTTPException(
        429, f"too many failed authentications from {ip}: requests with a key are refused for {wait} s",
        {"Retry-After": str(wait)},
    )


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` value, as FastAPI's ``HTTPBearer`` reads it; else None."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    return key if key and scheme.lower() == "bearer" else None


def authenticate(limiter: AuthLimiter, users: UserBook, key: str | None, address: Callable[[], str]) -> User:
    """The user of ``key``; 401 without a known key, 429 from an address refused for guessing.

    ``address`` gives the client IP; it is called only when needed (a refusal or a wrong key).
    """
    if limiter.refused:  # empty almost always: then a request pays no address lookup here
        ip = address()
        wait = limiter.retry_after(ip)
        if wait is not None:
            raise _refusal(ip, wait)
    if key is None:
        raise HTTPException(401, "missing API key: send `Authorization: Bearer KEY`", {"WWW-Authenticate": "Bearer"})
    user = users.authenticate(key)
    if user is None:
        AUTH_FAILURES.inc()
        limiter.failed(address())
        raise HTTPException(401, "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
    return user


def check_role(user: User, roles: tuple[Role, ...]) -> User:
    """``user`` if its role is one of ``roles``; else 403."""
    if user.role not in roles:
        raise HTTPException(403, f"role {user.role!r} may not do this; allowed: {', '.join(roles)}")
    return user


async def caller(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> User:
    """The authenticated user of a request (see :func:`authenticate`)."""
    key = credentials.credentials if credentials is not None else None
    return authenticate(request.app.state.auth_limiter, request.app.state.gateway.users, key,
                        lambda: client_address(request))


def require(*roles: Role):
    """A dependency: the caller, if its role is one of ``roles``; else 403."""

    async def allowed(user: User = Depends(caller)) -> User:
        return check_role(user, roles)

    return Depends(allowed)
