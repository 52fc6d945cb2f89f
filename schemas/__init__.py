"""Records on the wire: request events, decisions, limits, blocklist entries, abuse analytics, the allow-list,
advice and API users.

No logic here. Only the records other programs may read or write are exported; the analytics'
internal ``ip-features`` records (``schemas.flags.IpPartial``, ``FeaturesWatermark``) and the
gateway's ``schemas.users.HistoryOwner`` stay in their modules.
"""

from schemas.advice import AdvicePolicy, AdviceRun, LimitAdvice
from schemas.allowlist import AllowlistEntry
from schemas.decisions import ALLOW, BLOCK, THROTTLE, Decision, Verdict
from schemas.events import DeadLetter, RequestEvent
from schemas.flags import AbuseReport, AutoBan, IpFeatures, IpFlag, Population, ReportedIp
from schemas.limits import BlocklistEntry, RateLimit, TierLimit, TierMembership
from schemas.users import User

__all__ = [
    "ALLOW",
    "BLOCK",
    "THROTTLE",
    "AbuseReport",
    "AdvicePolicy",
    "AdviceRun",
    "AllowlistEntry",
    "AutoBan",
    "BlocklistEntry",
    "DeadLetter",
    "Decision",
    "IpFeatures",
    "IpFlag",
    "LimitAdvice",
    "Population",
    "RateLimit",
    "ReportedIp",
    "RequestEvent",
    "TierLimit",
    "TierMembership",
    "User",
    "Verdict",
]
