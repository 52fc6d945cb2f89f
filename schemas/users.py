"""Records of the gateway's compacted topics: API users (``users``) and history owners (``history-owners``)."""

from typing import Annotated, Literal

import msgspec

Role = Literal["client", "service", "analyst", "admin"]
ROLES: tuple[Role, ...] = ("client", "service", "analyst", "admin")

#: Ids the API accepts: printable ASCII without space and slash (they appear in URL paths).
ID_PATTERN = r"^[\x21-\x2e\x30-\x7e]+$"
#: API user ids: that character set, and the limiter's length bound.
UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=ID_PATTERN)]


class User(msgspec.Struct, frozen=True):
    """An API user, keyed by ``user_id`` on the ``users`` topic; a tombstone revokes it.

    Only a hash of the API key is stored (``sha256:<hex>``); the key itself is shown once, on creation.
    """

    user_id: UserName
    role: Role
    key_hash: str
    created_at: float


class HistoryOwner(msgspec.Struct, frozen=True):
    """Which worker serves the request history of one decisions partition (keyed by the partition)."""

    partition: Annotated[int, msgspec.Meta(ge=0)]
    url: str
    worker: str
    since: float
