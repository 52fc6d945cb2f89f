"""Users from the command line (``ratewarden users``): bootstrap the first admin, list, revoke.

Writes go to the same compacted ``users`` topic the gateways follow, so they apply everywhere.
"""

import secrets
import time

import msgspec

from ratewarden.control import _read_all, _send
from ratewarden.gateway.auth import new_user
from schemas.users import Role, User
from streams.settings import Settings, get_settings
from streams.topics import ensure_topics

__all__ = ["create_user", "delete_user", "read_users"]


def read_users(settings: Settings | None = None) -> dict[str, User]:
    settings = settings or get_settings()
    decode = msgspec.json.Decoder(User).decode
    return {key.decode(): decode(value) for key, value in _read_all(settings, settings.users_topic).items()}


def create_user(user_id: str | None, role: Role, settings: Settings | None = None) -> tuple[User, str]:
    """Create a user (``<role>-<random>`` when no id is given); returns it and its API key, shown only now."""
    settings = settings or get_settings()
    ensure_topics(settings)
    user_id = user_id or f"{role}-{secrets.token_hex(4)}"
    if user_id in read_users(settings):
        raise ValueError(f"user {user_id!r} exists; delete it first to issue a new key")
    user, key = new_user(user_id, role, time.time())
    _send(settings, settings.users_topic, [(user.user_id, msgspec.json.encode(user))])
    return user, key


def delete_user(user_id: str, settings: Settings | None = None) -> bool:
    """Revoke a user and its key; False if there was no such user."""
    settings = settings or get_settings()
    if user_id not in read_users(settings):
        return False
    _send(settings, settings.users_topic, [(user_id, None)])
    return True
