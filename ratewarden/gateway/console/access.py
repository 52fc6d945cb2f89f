"""Who is looking at a console page, and whether a form may change anything.

A viewer is known by the session cookie (:data:`COOKIE`), or, for reading pages only, by an API key
in ``Authorization: Bearer`` (checked as the API checks it: unknown keys count towards the address's
failed-authentication limit). Pages are for analysts and admins: no session is 401, another role
403. A form that changes state needs a session, its CSRF token and the admin role (403 otherwise);
a session's user is looked up on every request, so a revoked or reissued key ends its sessions.
Every answer under ``/console`` gets the security headers (:class:`ConsoleHeaders`).
"""

import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import HTTPException, Request

from ratewarden.gateway.auth import authenticate, bearer_key, client_address
from ratewarden.gateway.console.security import SECURITY_HEADERS, Session, key_fingerprint
from schemas.users import User

__all__ = [
    "COOKIE", "ConsoleHeaders", "LOGIN_COOKIE", "READERS", "Refused", "Viewer", "admin_form", "form_fields",
    "session_user", "viewer",
]

logger = logging.getLogger(__name__)

COOKIE = "rw_session"
LOGIN_COOKIE = "rw_login"
READERS = ("analyst", "admin")
_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
_NO_STORE = (b"cache-control", b"no-store")


class Refused(Exception):
    """A console request refused: answered as an HTML page with ``status`` (see ``console.web``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class Viewer:
    user_id: str
    role: str
    session: Session | None  # None: a bearer key (read-only use)
    csrf: str  # the token the forms of this viewer's pages carry ("" without a session)

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def session_user(request: Request) -> tuple[Session, User] | None:
    console = request.app.state.console
    session = console.signer.session(request.cookies.get(COOKIE), time.time())
    if session is None:
        return None
    user = request.app.state.gateway.users.get(session.user_id)
    if user is None or key_fingerprint(user.key_hash) != session.key:
        return None  # revoked or reissued since the login
    return session, user


async def viewer(request: Request) -> Viewer:
    """The viewer of a console page; :class:`Refused` 401 without a session or key, 403 for other roles."""
    found = session_user(request)
    if found is not None:
        session, user = found
        csrf = request.app.state.console.signer.csrf(session)
    else:
        session, csrf = None, ""
        key = bearer_key(request.headers.get("authorization"))
        if key is None:
            raise Refused(401, "Sign in to use the console.")
        try:
            user = authenticate(request.app.state.auth_limiter, request.app.state.gateway.users, key,
                                lambda: client_address(request))
        except HTTPException as exc:
            raise Refused(exc.status_code, str(exc.detail), dict(exc.headers or {})) from None
    if user.role not in READERS:
        raise Refused(403, f"The console is for analysts and admins; {user.user_id} is a {user.role}.")
    return Viewer(user.user_id, user.role, session, csrf)


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a url-encoded form body (the first value of each)."""
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "The form is not UTF-8.") from None
    return {name: values[0] for name, values in parse_qs(text, keep_blank_values=True).items()}


async def admin_form(request: Request) -> tuple[Viewer, dict[str, str]]:
    """The admin who sent a state-changing form and its fields; 403 without a session, CSRF token or role."""
    who = await viewer(request)
    fields = await form_fields(request)
    signer = request.app.state.console.signer
    if who.session is None or not signer.csrf_ok(who.session, fields.get("csrf")):
        logger.warning("console: %s %s refused: missing or wrong CSRF token", request.method, request.url.path)
        raise Refused(403, "The form's CSRF token is missing or wrong: reload the page and try again.")
    if not who.admin:
        raise Refused(403, f"Only admins may change anything; {who.user_id} is an {who.role}.")
    return who, fields


class ConsoleHeaders:
    """ASGI middleware: the security headers (CSP first) on every answer under ``/console``; pages are
    not stored by caches (static files may be)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/console" or path.startswith("/console/")):
            return await self.app(scope, receive, send)
        extra = _HEADERS if path.startswith("/console/static/") else [*_HEADERS, _NO_STORE]

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
