"""API keys and roles.

Keys are 256 random bits (``secrets.token_urlsafe``), shown once when a user is created and stored
only as a SHA-256 hash; a presented key is hashed and compared with ``hmac.compare_digest``. (A slow
hash such as scrypt buys nothing for random keys of this length and would cost every request.)
A missing, unknown or revoked key is 401; a known key whose role is not allowed is 403.
"""

import hashlib
import hmac
import secrets

import msgspec
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from schemas.users import Role, User

__all__ = ["UserBook", "caller", "hash_key", "new_user", "require"]

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

    def __init__(self) -> None:
        self._by_id: dict[str, User] = {}
        self._by_hash: dict[str, User] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, user_id: str) -> User | None:
        return self._by_id.get(user_id)

    def apply(self, key: bytes, value: bytes | None) -> None:
        """One record of the ``users`` topic; ``None`` (a tombstone) revokes the user and its key."""
        old = self._by_id.pop(key.decode(), None)
        if old is not None:
            self._by_hash.pop(old.key_hash, None)
        if value is not None:
            user = _decode_user(value)
            self._by_id[user.user_id] = self._by_hash[user.key_hash] = user

    def authenticate(self, key: str) -> User | None:
        digest = hash_key(key)
        user = self._by_hash.get(digest)
        if user is None or not hmac.compare_digest(user.key_hash.encode(), digest.encode()):
            return None
        return user


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer KEY`")


async def caller(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> User:
    """The authenticated user of a request, or 401."""
    if credentials is None:
        raise HTTPException(401, "missing API key: send `Authorization: Bearer KEY`", {"WWW-Authenticate": "Bearer"})
    user = request.app.state.gateway.users.authenticate(credentials.credentials)
    if user is None:
        raise HTTPException(401, "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
    return user


def require(*roles: Role):
    """A dependency: the caller, if its role is one of ``roles``; else 403."""

    async def allowed(user: User = Depends(caller)) -> User:
        if user.role not in roles:
            raise HTTPException(403, f"role {user.role!r} may not do this; allowed: {', '.join(roles)}")
        return user

    return Depends(allowed)
