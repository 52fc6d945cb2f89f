"""Signed session cookies and CSRF tokens of the console, with the standard library's HMAC.

A session is ``base64url(json).base64url(hmac_sha256(secret, json))``; the JSON names the user, its
role, a fingerprint of its key's hash (so a session ends when the key is revoked or reissued), a
random nonce and the expiry. Nothing secret is inside: the cookie is signed, not encrypted.

CSRF: every form of a signed-in page carries ``hmac(secret, "csrf:" + nonce)``, which only the
holder of the session cookie can have been shown. The login form, before any session exists, uses a
double-submit pair: a random value in an HttpOnly cookie and its HMAC in the form; a cross-site page
can neither read the cookie nor compute the HMAC. Comparisons use ``hmac.compare_digest``.
"""

import base64
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass

from pydantic import SecretStr

__all__ = ["CSP", "SECURITY_HEADERS", "Session", "Signer", "secret_of"]

logger = logging.getLogger(__name__)

#: Scripts, styles, images and fetches only from the gateway itself; no inline code of any kind.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def secret_of(configured: SecretStr | None) -> bytes:
    """The configured secret, else a random one for this process (logged as generated, never its value)."""
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value().encode()
    logger.info("console: no RATEWARDEN_CONSOLE_SECRET; a session secret was generated for this process "
                "(sessions end when it stops)")
    return secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_fingerprint(key_hash: str) -> str:
    """A short digest of a user's stored key hash: a reissued or revoked key changes or removes it."""
    return hashlib.sha256(key_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Session:
    user_id: str
    role: str
    key: str  # key_fingerprint of the user's key hash when the session began
    nonce: str
    expires: float


class Signer:
    """Signs and checks sessions and CSRF tokens with one secret."""

    def __init__(self, secret: bytes, max_age: float) -> None:
        self._secret, self.max_age = secret, max_age

    def _mac(self, purpose: str, data: bytes) -> str:
        return _b64(hmac.new(self._secret, purpose.encode() + b"\0" + data, hashlib.sha256).digest())

    def new_session(self, user_id: str, role: str, key_hash: str, now: float) -> tuple[Session, str]:
        """A session for the user and its cookie value, valid for ``max_age`` seconds from ``now``."""
        session = Session(user_id, role, key_fingerprint(key_hash), secrets.token_urlsafe(16), now + self.max_age)
        payload = json.dumps([session.user_id, session.role, session.key, session.nonce, session.expires],
                             separators=(",", ":")).encode()
        return session, f"{_b64(payload)}.{self._mac('session', payload)}"

    def session(self, cookie: str | None, now: float) -> Session | None:
        """The session of a cookie value, or None if it is missing, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        try:
            payload = _unb64(body)
            if not hmac.compare_digest(mac, self._mac("session", payload)):
                return None
            user_id, role, key, nonce, expires = json.loads(payload)
        except (ValueError, TypeError):
            return None
        if not isinstance(expires, (int, float)) or expires <= now:
            return None
        return Session(str(user_id), str(role), str(key), str(nonce), float(expires))

    def csrf(self, session: Session) -> str:
        """The CSRF token of the forms shown to ``session``."""
        return self._mac("csrf", session.nonce.encode())

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf(session))

    def login_pair(self) -> tuple[str, str]:
        """(cookie value, form token) of the double-submitted login form."""
        value = secrets.token_urlsafe(16)
        return value, self._mac("login", value.encode())

    def login_ok(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        return hmac.compare_digest(token, self._mac("login", cookie.encode()))
