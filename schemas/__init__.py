"""Records on the wire: request events, decisions, limits and blocklist entries. No logic here."""

from schemas.decisions import ALLOW, BLOCK, THROTTLE, Decision, Verdict
from schemas.events import DeadLetter, RequestEvent
from schemas.limits import BlocklistEntry, RateLimit

__all__ = [
    "ALLOW",
    "BLOCK",
    "THROTTLE",
    "BlocklistEntry",
    "DeadLetter",
    "Decision",
    "RateLimit",
    "RequestEvent",
    "Verdict",
]
