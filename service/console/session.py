"""Console sessions: a signed cookie naming the admin key, with an expiry and a CSRF secret.

The cookie is ``<payload>.<signature>``: the payload is ``name|expires_s|nonce`` in
URL-safe base64, the signature an HMAC-SHA256 over it with the console secret
(`CIOQ_CONSOLE_SECRET`, else a digest of the admin keys, so rotating the keys ends every
session). Nothing is stored server-side. A form's CSRF token is an HMAC of the session's
nonce, so it is worthless without the session cookie and the cookie is worthless to a
page that cannot read this origin's forms (SameSite=Strict keeps it off cross-site posts).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.config import ConsoleSettings, KeySettings, admin_key_entries

COOKIE = "cioq_console"
PATH = "/console"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in operator: the admin key's name, when the session ends, its CSRF nonce."""

    name: str
    expires_s: int
    nonce: str


def console_secret(console: ConsoleSettings, keys: KeySettings) -> bytes:
    if console.console_secret is not None:
        return console.console_secret.get_secret_value().encode()
    admin = sorted(key for _, key in admin_key_entries(keys))
    return hashlib.sha256(("cioq-console\n" + "\n".join(admin)).encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks session cookies and CSRF tokens."""

    def __init__(
        self,
        console: ConsoleSettings,
        keys: KeySettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = console_secret(console, keys)
        self.lifetime_s = console.console_session_s
        self.clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, name: str) -> tuple[Session, str]:
        """A new session for admin key `name` and its cookie value."""
        session = Session(name, int(self.clock()) + self.lifetime_s, secrets.token_urlsafe(16))
        payload = _b64(f"{session.name}|{session.expires_s}|{session.nonce}".encode())
        return session, f"{payload}.{self._sign(payload)}"

    def read(self, cookie_value: str | None) -> Session | None:
        """The session in a cookie value, or None when forged, malformed or expired."""
        if not cookie_value or "." not in cookie_value:
            return None
        payload, _, signature = cookie_value.partition(".")
        if not _same(self._sign(payload), signature):
            return None
        try:
            name, expires, nonce = _unb64(payload).decode().split("|")
            expires_s = int(expires)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if expires_s <= self.clock():
            return None
        return Session(name, expires_s, nonce)

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf|{session.nonce}")

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and _same(self.csrf_token(session), token or "")

    def set_cookie(self, value: str, *, secure: bool) -> bytes:
        attributes = f"Path={PATH}; Max-Age={self.lifetime_s}; HttpOnly; SameSite=Strict"
        return f"{COOKIE}={value}; {attributes}{'; Secure' if secure else ''}".encode()

    @staticmethod
    def clear_cookie() -> bytes:
        return f"{COOKIE}=; Path={PATH}; Max-Age=0; HttpOnly; SameSite=Strict".encode()


def cookie_from(header: str | None) -> str | None:
    """The session cookie's value in a Cookie header."""
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def _same(expected: str, given: str) -> bool:
    """Constant-time equality that any text can take: `compare_digest` raises TypeError on
    non-ASCII `str`, and a forged cookie or form field must be refused, not crash."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
