"""Console sessions: an API token exchanged, once, for an HttpOnly session cookie.

The browser never keeps the token: it sends it once, in `Authorization: Bearer` (the only place the
API reads tokens from), to `POST /console/session`, and gets back a cookie holding a random session
id (`HttpOnly`, so no script can read it; `SameSite=Strict`; host-only, `Path=/`; expiring). The
token stays in this process's memory, with the session.

`SessionAuth` sits in front of the whole app: a request that carries the cookie and no
`Authorization` header is let through with the session's token as its bearer, so that every
`/v1` route applies exactly the rules it applies to the CLI (owner isolation, rate limits, 404 for
what the owner may not see). A state-changing request (anything but GET, HEAD, OPTIONS) must also
carry the session's anti-forgery token in `X-Tether-CSRF` (which a page on another site cannot
read, nor send without a CORS preflight that the API never grants), and an `Origin`, if sent, of
this server: otherwise it is refused with 403 and nothing is changed. A request with its own
`Authorization` header is left as it is: the cookie is ignored.

Sessions live in memory: restarting the API signs everyone out, and several API processes behind
one address need sticky sessions (docs/console.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tether.api.models import Principal

COOKIE = "tether_session"
CSRF_HEADER = "x-tether-csrf"
SESSION_TTL_S = 8 * 3600
MAX_SESSIONS = 10_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths whose answer to an ended session is a 401 (the console then asks to sign in again); a page
# asked for with an ended session is served as to anybody signed out.
API_PREFIXES = ("/v1/", "/console/session")


@dataclass(frozen=True)
class Session:
    token: str
    principal: Principal
    csrf: str
    expires_at: float  # time.time()

    @property
    def remaining_s(self) -> int:
        return max(int(self.expires_at - time.time()), 0)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """The sessions of this API process, by the hash of their id."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, limit: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._by_key: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def open(self, token: str, principal: Principal) -> tuple[str, Session]:
        """A new session: its id (for the cookie) and the session."""
        now = time.time()
        if len(self._by_key) >= self.limit:
            self._by_key = {k: s for k, s in self._by_key.items() if s.expires_at > now}
            while len(self._by_key) >= self.limit:  # the oldest go first
                del self._by_key[next(iter(self._by_key))]
        session_id = secrets.token_urlsafe(32)
        session = Session(token, principal, secrets.token_urlsafe(32), now + self.ttl_s)
        self._by_key[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        key = _key(session_id)
        session = self._by_key.get(key)
        if session is not None and session.expires_at <= time.time():
            del self._by_key[key]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._by_key.pop(_key(session_id), None)


def cookie_header(session_id: str, max_age_s: int, *, secure: bool) -> str:
    """A Set-Cookie value for the session (an empty id and 0 remove it)."""
    parts = [f"{COOKIE}={session_id}", "HttpOnly", "SameSite=Strict", "Path=/"]
    parts.append(f"Max-Age={max_age_s}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def session_id_of(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"cookie")
    if not raw:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(raw.decode("latin-1"))
    except CookieError:
        return None
    morsel = cookies.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def _same_origin(origin: bytes, headers: dict[bytes, bytes], scheme: str) -> bool:
    host = headers.get(b"host", b"").decode("latin-1")
    return origin.decode("latin-1") == f"{scheme}://{host}"


async def _answer(
    send: Send, status: int, body: dict[str, str], headers: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class SessionAuth:
    """Turns a console session cookie into the session's bearer token, after the CSRF checks."""

    def __init__(self, app: ASGIApp, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        session_id = session_id_of(headers)
        if session_id is None or b"authorization" in headers:
            await self.app(scope, receive, send)
            return
        session = self.sessions.get(session_id)
        path: str = scope["path"]
        if session is None:
            if path.startswith(API_PREFIXES):
                secure = scope.get("scheme") == "https"
                await _answer(
                    send,
                    401,
                    {
                        "error": "session_ended",
                        "message": "the console session has ended (it expired, you signed out, "
                        "or the API restarted)",
                        "hint": "sign in again with an API token",
                    },
                    [(b"set-cookie", cookie_header("", 0, secure=secure).encode())],
                )
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS:
            problem = self._forgery(scope, headers, session)
            if problem is not None:
                await _answer(
                    send,
                    403,
                    {
                        "error": "csrf_refused",
                        "message": f"refused, nothing was changed: {problem}",
                        "hint": "use the console's own controls, or send an API token in the "
                        "Authorization header",
                    },
                    [],
                )
                return
        bearer = f"Bearer {session.token}".encode()
        scope = {**scope, "headers": [*scope["headers"], (b"authorization", bearer)]}
        await self.app(scope, receive, send)

    @staticmethod
    def _forgery(scope: Scope, headers: dict[bytes, bytes], session: Session) -> str | None:
        """Why this state-changing request may be forged, or None."""
        origin = headers.get(b"origin")
        if origin is not None and not _same_origin(origin, headers, scope.get("scheme", "http")):
            return f"the request came from another site ({origin.decode('latin-1')})"
        if headers.get(b"sec-fetch-site") == b"cross-site":
            return "the request came from another site"
        given = headers.get(CSRF_HEADER.encode(), b"")
        if not hmac.compare_digest(given, session.csrf.encode()):
            return "the console's anti-forgery token is missing or wrong (a cross-site request?)"
        return None


def session_body(session: Session) -> dict[str, Any]:
    """What `GET /console/session` shows the page about its session."""
    return {
        "owner": session.principal.owner,
        "admin": session.principal.admin,
        "csrf": session.csrf,
        "expires_in_s": session.remaining_s,
    }
