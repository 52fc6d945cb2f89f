"""Records of the compacted ``allowlist`` topic: networks whose flags are reported, never banned.

Keyed by the network's normalised CIDR (host bits cleared; an address is its /32 or /128); a
tombstone removes it. The workers' ``RATEWARDEN_ALLOWLIST_CIDRS`` is a static seed beside the topic:
it is not on the topic and cannot be removed at runtime (``agents.allowlist``).
"""

from typing import Annotated

import msgspec

__all__ = ["AllowlistEntry"]


class AllowlistEntry(msgspec.Struct, frozen=True):
    """An allow-listed network (``network``: a normalised CIDR, the record's key), why, when (wall
    seconds) and by whom (an API user, or ``cli:<login>``)."""

    network: Annotated[str, msgspec.Meta(min_length=3, max_length=49)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "manual"
    added_at: float = 0.0
    added_by: Annotated[str, msgspec.Meta(max_length=133)] = ""
