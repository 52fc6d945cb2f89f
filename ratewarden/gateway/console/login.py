"""``GET|POST /console/login`` and ``POST /console/logout``: an API key once, then a session cookie.

The key is checked exactly as the API checks a bearer key (``ratewarden.gateway.auth.authenticate``):
a wrong one is 401 and counts towards the address's failed-authentication limit (429 past it). A
good analyst or admin key gets :data:`~ratewarden.gateway.console.access.COOKIE`, signed, HttpOnly,
SameSite=Strict, Secure when the gateway serves HTTPS, for ``console_session_max_age`` seconds. The
key itself is never stored, logged or echoed back.
"""

import logging
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ratewarden.gateway.auth import authenticate, client_address
from ratewarden.gateway.console.access import COOKIE, LOGIN_COOKIE, READERS, session_user, form_fields
from ratewarden.gateway.console.web import console_of, render

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False)
PATH = "/console"
#: Seconds a login form stays usable.
FORM_AGE = 3_600


def _login_page(request: Request, status: int = 200, message: str = "",
                headers: dict[str, str] | None = None) -> HTMLResponse:
    """The login form with a fresh double-submit pair (cookie and hidden field)."""
    value, token = console_of(request).signer.login_pair()
    page = render(request, "login.html", None, status, headers, csrf=token, message=message)
    page.set_cookie(LOGIN_COOKIE, value, max_age=FORM_AGE, path=PATH, secure=_tls(request), httponly=True,
                    samesite="strict")
    return page


def _tls(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> HTMLResponse:
    """303 to the overview with a session cookie; the form again with 401 (wrong key), 403 (a forged or
    missing CSRF token, or a role that may not use the console) or 429 (too many wrong keys)."""
    console = console_of(request)
    fields = await form_fields(request)
    if not console.signer.login_ok(request.cookies.get(LOGIN_COOKIE), fields.get("csrf")):
        logger.warning("console login refused: missing or wrong CSRF token")
        return _login_page(request, 403, "The form expired or was not sent from this page: try again.")
    gateway = request.app.state.gateway
    key = fields.get("key", "").strip() or None
    try:
        user = authenticate(request.app.state.auth_limiter, gateway.users, key, lambda: client_address(request))
    except HTTPException as exc:
        message = "Unknown or revoked key." if exc.status_code == 401 else str(exc.detail)
        return _login_page(request, exc.status_code, message, dict(exc.headers or {}))
    if user.role not in READERS:
        return _login_page(request, 403, f"The console is for analysts and admins; {user.user_id} is a {user.role}.")
    _, cookie = console.signer.new_session(user.user_id, user.role, user.key_hash, time.time())
    logger.info("console: %s (%s) signed in", user.user_id, user.role)
    answer = RedirectResponse("/console/", 303)
    answer.set_cookie(COOKIE, cookie, max_age=int(console.signer.max_age), path=PATH, secure=_tls(request),
                      httponly=True, samesite="strict")
    answer.delete_cookie(LOGIN_COOKIE, path=PATH)
    return answer


@router.post("/logout")
async def logout(request: Request) -> Response:
    """303 to the login page with the cookie cleared; 403 for a signed-in session without its CSRF token."""
    found = session_user(request)
    if found is not None:
        fields = await form_fields(request)
        if not console_of(request).signer.csrf_ok(found[0], fields.get("csrf")):
            return render(request, "refused.html", None, 403, status=403,
                          message="The form's CSRF token is missing or wrong: reload the page and try again.")
        logger.info("console: %s signed out", found[1].user_id)
    answer = RedirectResponse("/console/login", 303)
    answer.delete_cookie(COOKIE, path=PATH, secure=_tls(request), httponly=True, samesite="strict")
    return answer
