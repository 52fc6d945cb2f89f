"""The request and response bodies of the HTTP API (pydantic; the OpenAPI document is built from them).

Request bodies are strict: unknown fields, wrong types, NaN and infinities are 422 with a message.
Identifiers are printable ASCII so they are safe in paths and in the limiter's keys.
"""

from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ratewarden.gateway.net import normalize_ip
from schemas.limits import BURST_DESCRIPTION, TIER_PATTERN, Algorithm
from schemas.users import ID_PATTERN

__all__ = [
    "AbuseReportInfo", "AbuseReportList", "BatchBody", "BatchDecision", "BatchDecisions", "Blocked", "BlockBody", "BlockEntry", "BlockList", "CreatedUser",
    "HistoryItem", "HistoryPage", "IpPath", "Limit", "LimitBody", "LimitFields", "LimitList", "NetworkAddressPath",
    "NewUser", "PopulationInfo", "PrefixPath", "Problem",
    "ReportedIpInfo", "ReportShareInfo", "SubmitBody", "Submitted", "Throttled", "Tier", "TierBody", "TierLimitInfo",
    "TierList", "TierMember", "TierPath", "TierTypeBody", "Unavailable", "UserInfo", "UserIdPath",
]

#: Printable ASCII.
TEXT_PATTERN = r"^[\x20-\x7e]+$"

UserId = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN, examples=["alice"])]
RequestType = Annotated[str, Field(min_length=1, max_length=64, pattern=TEXT_PATTERN, examples=["some_request"])]
Role = Literal["client", "service", "analyst", "admin"]


def _ip(text: str) -> str:
    ip = normalize_ip(text)
    if ip is None:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address")
    return ip


IpText = Annotated[str, Field(min_length=2, max_length=45, examples=["203.0.113.7"]), AfterValidator(_ip)]
HttpStatus = Annotated[int, Field(ge=100, le=599, examples=[401])]
UserIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN, description="a user id")]
IpPath = Annotated[
    str, Path(min_length=2, max_length=45, description="an IPv4 or IPv6 address", examples=["192.0.2.1"]),
    AfterValidator(_ip),
]
NetworkAddressPath = Annotated[
    str, Path(min_length=2, max_length=45, description="the network's IPv4 or IPv6 address (host bits are cleared)",
              examples=["198.51.100.0"]),
]
PrefixPath = Annotated[int, Path(ge=0, le=128, description="the prefix length: 0-32 (IPv4), 0-128 (IPv6)", examples=[24])]
TierPath = Annotated[
    str, Path(min_length=1, max_length=32, pattern=TIER_PATTERN, examples=["gold"],
              description="a tier: 1 to 32 of A-Z a-z 0-9 _ . -, the first a letter or digit")
]
TypeQuery = Annotated[
    str | None, Query(min_length=1, max_length=64, pattern=TEXT_PATTERN, description="the limit of one request type")
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class SubmitBody(_Body):
    request_type: RequestType
    user_id: UserId | None = Field(None, description="service/admin keys only: submit on behalf of this user")
    ip: IpText | None = Field(None, description="service/admin keys only: the end client's IP")
    status: HttpStatus | None = Field(
        None, description="service/admin keys only: the HTTP status (or auth result as one) the service answered the "
                          "request with, if known; the abuse analytics count failures with it"
    )


class BatchBody(_Body):
    """Documents ``POST /requests/batch``; the hot route decodes it with msgspec, item by item."""

    requests: list[SubmitBody] = Field(
        min_length=1, description="1 to `gateway_batch_max_items` (default 1,000) requests, each as for POST /requests"
    )


class BatchDecision(BaseModel):
    """One item's answer: the body ``POST /requests`` would give, its status as ``code``, its RateLimit fields."""

    status: Literal["ok", "throttled", "blocked", "unavailable", "invalid", "forbidden"]
    code: int = Field(description="the status POST /requests would have answered: 200, 429, 403, 503, or 422")
    request_id: str | None = None
    shadow: bool | None = None
    fail_open: bool | None = None
    reason: str | None = None
    retry_after: float | None = Field(None, description="throttled: seconds until a request would be allowed")
    detail: str | None = Field(None, description="invalid, forbidden or unavailable: why")
    ratelimit_policy: str | None = Field(None, description="the item's RateLimit-Policy field")
    ratelimit: str | None = Field(None, description="the item's RateLimit field (absent without a decision)")
    retry_after_header: str | None = Field(None, description="the item's Retry-After field (throttled, unavailable)")


class BatchDecisions(BaseModel):
    decisions: list[BatchDecision] = Field(description="one per request, in the order of the request body")


class Submitted(BaseModel):
    status: Literal["ok"]
    request_id: str
    shadow: bool = Field(False, description="a shadow-mode limit would have throttled this request")
    fail_open: bool = Field(False, description="no decision arrived in time; allowed by the fail-open setting")


class Throttled(BaseModel):
    status: Literal["throttled"]
    request_id: str
    reason: str
    retry_after: float = Field(description="seconds until a request would be allowed")


class Blocked(BaseModel):
    status: Literal["blocked"]
    request_id: str
    reason: str


class Unavailable(BaseModel):
    status: Literal["unavailable"]
    request_id: str
    detail: str


class Problem(BaseModel):
    detail: str


class LimitFields(_Body):
    """A limit's numbers (a user's: :class:`LimitBody`; a tier's: :class:`TierBody`)."""

    limit: int = Field(ge=0, le=1_000_000_000, description="requests allowed per window")
    window: float = Field(60.0, ge=0.001, le=86_400, description="seconds, at least 1 ms")
    algorithm: Algorithm = "fixed"
    shadow: bool = Field(False, description="decide, but never throttle: the reason says what would have happened")
    burst: int | None = Field(None, ge=0, le=1_000_000_000, description=BURST_DESCRIPTION)


class LimitBody(LimitFields):
    request_type: RequestType | None = Field(None, description="limit only this request type (on top of the user limit)")


class TierTypeBody(LimitFields):
    request_type: RequestType = Field(description="the request type this limit applies to")


class TierBody(LimitFields):
    """A tier, whole: the limit each member gets (unless it has its own), and its limits per request type."""

    types: list[TierTypeBody] = Field(
        [], max_length=100, description="limits of single request types, on top of the tier's limit; a PUT replaces "
                                        "the tier whole, so types left out are removed"
    )

    @model_validator(mode="after")
    def _distinct_types(self) -> "TierBody":
        seen = [t.request_type for t in self.types]
        if len(set(seen)) != len(seen):
            raise ValueError("types: a request type appears twice")
        return self


class TierLimitInfo(BaseModel):
    limit: int
    window: float
    request_type: str | None
    algorithm: Algorithm
    shadow: bool
    burst: int | None


class Tier(BaseModel):
    name: str
    limit: TierLimitInfo | None = Field(description="the tier's limit; null: its members get the default")
    types: list[TierLimitInfo] = Field(description="its limits of single request types")
    members: int = Field(description="users assigned to the tier")


class TierList(BaseModel):
    tiers: list[Tier]


class TierMember(BaseModel):
    user_id: str
    tier: str


class Limit(BaseModel):
    user_id: str
    limit: int
    window: float
    request_type: str | None
    algorithm: Algorithm
    shadow: bool
    burst: int | None


class LimitList(BaseModel):
    default: Limit
    limits: list[Limit]


class NewUser(_Body):
    user_id: UserId
    role: Role


class UserInfo(BaseModel):
    user_id: str
    role: Role
    created_at: float


class CreatedUser(UserInfo):
    api_key: str = Field(description="shown only in this answer; store it now")


class BlockBody(_Body):
    reason: str = Field("manual", min_length=1, max_length=128, pattern=TEXT_PATTERN)
    ttl: float | None = Field(None, gt=0, le=315_360_000, description="seconds from now; none: until removed")


class BlockEntry(BaseModel):
    subject: str = Field(description="an IP, a network (normalised CIDR) or a user id")
    kind: Literal["ip", "network", "user"]
    reason: str
    start: float
    ttl: float | None
    expires_at: float | None


class BlockList(BaseModel):
    entries: list[BlockEntry]


class HistoryItem(BaseModel):
    ts: float
    request_id: str
    request_type: str
    ip: str
    verdict: Literal["allow", "throttle", "block"]
    reason: str
    status: int | None = Field(None, description="the status the service reported with the request; absent if none")


class HistoryPage(BaseModel):
    user_id: str
    requests: list[HistoryItem] = Field(description="newest first")
    next_before: float | None = Field(description="pass as `before` for the next (older) page; null: no more")


class ReportedIpInfo(BaseModel):
    ip: str = Field(description="the subject: an address, or a network as a CIDR (kind network)")
    score: float = Field(description="the largest robust z-score of the subject in the window")
    rules: list[str] = Field(description="the rules that fired")
    requests: int
    users: int = Field(description="distinct users seen from the subject")
    allowlisted: bool = Field(description="on the allow-list: reported, never banned")
    kind: Literal["ip", "network"] = "ip"
    severity: Literal["low", "medium", "high"] = Field(
        default="high", description="low: reported only on a first offence; medium and high: banned"
    )


class PopulationInfo(BaseModel):
    ips: int
    median_requests: float
    mad_requests: float
    median_requests_per_user: float
    mad_requests_per_user: float


class ReportShareInfo(BaseModel):
    partition: int = Field(description="an ip-features partition")
    ips: int
    requests: int
    refused: int


class AbuseReportInfo(BaseModel):
    """One window as one analytics shard saw it (``schemas.flags.AbuseReport``)."""

    window_start: float = Field(description="event time, seconds since the epoch")
    window_end: float
    partitions: list[int] = Field(description="the ip-features partitions (the shard) this report covers")
    ips: int
    requests: int
    refused: int = Field(description="throttled and blocked requests")
    flagged: list[ReportedIpInfo]
    population: PopulationInfo = Field(description="the statistics the z-scores are taken against")
    late_partials: int = Field(description="partials merged after the window was first reported (a correction)")
    revision: int = Field(0, description="0 for the first report of the window; each correction adds 1")
    missing_sources: list[int] = Field(
        [], description="decisions partitions that had not closed the window when it was reported (idle)"
    )
    shares: list[ReportShareInfo] = Field(
        [], description="the counts per ip-features partition: the newest share per (window, partition) counts"
    )


class AbuseReportList(BaseModel):
    reports: list[AbuseReportInfo] = Field(description="newest window first")
    skipped: int = Field(description="records among those read that are not valid reports (left out)")
