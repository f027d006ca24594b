"""Browser sessions and CSRF tokens.

The session cookie carries a random token (its hash is what the store keeps);
cookies are HttpOnly, SameSite=Lax and, outside development, Secure. Every form
carries a CSRF token: an HMAC of the session token (signed in) or of a random
pre-session cookie (the sign-in and invite forms), compared in constant time. A
cross-site page can neither read it nor compute it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "teegate_session"
PRESESSION_COOKIE = "teegate_presession"
CSRF_FIELD = "csrf_token"


def csrf_token(secret: bytes, request: Request, session: str | None = None) -> str:
    """The token forms on this page carry; `session` overrides the cookie's (just signed in)."""
    seed = session or request.cookies.get(SESSION_COOKIE) or presession(request)
    return hmac.new(secret, b"csrf:" + seed.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, request: Request, sent: object) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(sent, csrf_token(secret, request))


def presession(request: Request) -> str:
    """The pre-session cookie's value, made on first sight (and set by `set_cookies`)."""
    value = request.cookies.get(PRESESSION_COOKIE) or request.scope.get("teegate_presession")
    if not value:
        value = secrets.token_urlsafe(32)
        request.scope["teegate_presession"] = value
    return str(value)


def set_cookies(
    response: Response, request: Request, *, secure: bool, session: str | None, ttl_s: float
) -> None:
    """Keep the pre-session cookie this request made; set or clear the session's."""
    made = request.scope.get("teegate_presession")
    if made and PRESESSION_COOKIE not in request.cookies:
        response.set_cookie(
            PRESESSION_COOKIE, made, httponly=True, secure=secure, samesite="lax", path="/"
        )
    if session is not None:
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=int(ttl_s),
            httponly=True,
            secure=secure,
            samesite="lax",
            path="/",
        )


def clear_session(response: Response, *, secure: bool) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")


def security_headers(checkout_origins: tuple[str, ...]) -> dict[str, str]:
    """Every page: scripts only from this origin, no framing, no referrer (so no page
    address leaves with a click), nothing cached (a page may show a key's secret).
    Forms post here only, and redirect on to the payment provider's checkout only."""
    form_action = " ".join(("'self'", *checkout_origins))
    return {
        "content-security-policy": (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
        ),
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "cache-control": "no-store",
    }
