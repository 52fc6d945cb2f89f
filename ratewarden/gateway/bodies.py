"""The hot routes' request bodies, decoded with msgspec under the same rules as the pydantic models.

``SubmitBody`` (pydantic) documents ``POST /requests`` in OpenAPI; :class:`Submit` is what the hot
route decodes: the same fields, lengths and patterns, unknown fields refused, no type coercion, no
NaN (not JSON). The patterns end in ``\\Z``: msgspec matches with Python's ``re``, whose ``$`` would
also match before a final newline (pydantic's engine does not). A refused body becomes
:class:`Invalid`, which carries FastAPI's 422 detail (``loc``, ``msg``, ``type``).
"""

import re
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from ratewarden.gateway.models import TEXT_PATTERN
from ratewarden.gateway.net import normalize_ip
from schemas.events import HttpStatus
from schemas.users import ID_PATTERN

__all__ = ["Invalid", "Submit", "batch_decoder", "check_ip", "checked", "is_json"]


def _whole(pattern: str) -> str:
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


class Submit(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    request_type: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_whole(TEXT_PATTERN))]
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_whole(ID_PATTERN))] | None = None
    ip: Annotated[str, msgspec.Meta(min_length=2, max_length=45)] | None = None
    status: HttpStatus | None = None


class Invalid(Exception):
    """A body (or one batch item) that is not valid: ``loc`` and ``msg`` as in FastAPI's 422 detail."""

    def __init__(self, loc: list[str | int], msg: str, kind: str = "value_error") -> None:
        super().__init__(msg)
        self.loc, self.msg, self.kind = loc, msg, kind

    @classmethod
    def of(cls, exc: msgspec.DecodeError) -> "Invalid":
        """From msgspec's message: its `` - at `$.a[0]` `` suffix becomes ``loc``."""
        text = str(exc)
        kind = "value_error" if isinstance(exc, msgspec.ValidationError) else "json_invalid"
        text, _, path = text.partition(" - at `$")
        loc: list[str | int] = ["body"]
        for part in re.findall(r"\.([^.\[`]+)|\[(\d+)\]", path):
            loc.append(part[0] or int(part[1]))
        named = re.search(r"field `([^`]+)`", text)
        if named and len(loc) == 1:
            loc.append(named.group(1))
        return cls(loc, text, kind)

    def detail(self) -> list[dict]:
        """FastAPI's 422 body ``detail``."""
        return [{"loc": self.loc, "msg": self.msg, "type": self.kind}]

    def line(self) -> str:
        """One line naming the field: a batch item's ``detail``."""
        field = ".".join(str(p) for p in self.loc[1:])
        return f"{field}: {self.msg}" if field else self.msg


def is_json(content_type: bytes | None) -> bool:
    """Whether FastAPI would parse a body of this Content-Type as JSON (none given: yes)."""
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


#: Canonical texts of recently seen addresses (``ipaddress`` parsing costs more than the rest of a batch item).
_NORMAL: dict[str, str] = {}


def check_ip(ip: str | None, loc: list[str | int]) -> str | None:
    """The canonical text of ``ip`` (None stays None); :class:`Invalid` if it is no IP address."""
    if ip is None:
        return None
    normal = _NORMAL.get(ip)
    if normal is None:
        normal = normalize_ip(ip)
        if normal is None:
            raise Invalid(loc, f"Value error, {ip!r} is not an IPv4 or IPv6 address")
        if len(_NORMAL) >= 65_536:
            _NORMAL.clear()
        _NORMAL[ip] = normal
    return normal


_submit = msgspec.json.Decoder(Submit).decode


def checked(submit: Submit | bytes) -> Submit:
    """A ``POST /requests`` body (or one decoded already), its ``ip`` normalised; :class:`Invalid` if it
    breaks a rule."""
    if not isinstance(submit, Submit):
        try:
            submit = _submit(submit)
        except msgspec.DecodeError as exc:
            raise Invalid.of(exc) from None
    if submit.ip is not None:
        submit = msgspec.structs.replace(submit, ip=check_ip(submit.ip, ["body", "ip"]))
    return submit


def batch_decoder(max_items: int) -> Callable[[bytes], list[Submit] | list[msgspec.Raw]]:
    """A decoder of ``{"requests": [...]}`` with 1..``max_items`` items; :class:`Invalid` for another shape.

    All items at once when they are all valid (the usual case); else each left raw, for
    :func:`checked` to decode one by one so that a bad item gets its own error.
    """
    def decoder(item: type) -> Callable[[bytes], Any]:
        items = Annotated[list[item], msgspec.Meta(min_length=1, max_length=max_items)]  # type: ignore[valid-type]
        return msgspec.json.Decoder(msgspec.defstruct("Batch", [("requests", items)], forbid_unknown_fields=True)).decode

    whole, raw = decoder(Submit), decoder(msgspec.Raw)

    def decode(body: bytes) -> list[Submit] | list[msgspec.Raw]:
        try:
            return whole(body).requests
        except msgspec.ValidationError:
            pass
        except msgspec.DecodeError as exc:
            raise Invalid.of(exc) from None
        try:
            return raw(body).requests
        except msgspec.DecodeError as exc:
            raise Invalid.of(exc) from None

    return decode
