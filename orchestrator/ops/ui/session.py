"""Who is looking at the dashboard, and the checks on what a browser posts.

The dashboard takes the API's tokens (`orchestrator.ops.auth`), in either of two ways:

- `Authorization: Bearer <token>`, as the API does (curl, scripts);
- the session cookie the login form sets: the token itself, base64url-encoded (a token may hold
  `;` or `"`), HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it),
  Path=/ui (the JSON API never accepts it), Secure when the page came over HTTPS. Every request
  identifies it again against the tokens loaded now, so a token removed from the file and
  reloaded (SIGHUP) logs its sessions out, and any orchestrator copy behind a load balancer
  accepts the cookie another copy set.

Every POST that carries no Authorization header must also carry the CSRF token: a random value
the server puts in a cookie of its own (HttpOnly, SameSite=Strict) and in every form it renders;
the two must be equal. Another site can neither read that cookie nor make the browser send it,
so it cannot forge a form that passes, even when the dashboard runs without tokens on loopback.
A request with an Authorization header cannot come from a cross-site form, so it needs no CSRF
token. An `Origin` header, when it names one, must name this host.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from orchestrator.ops import auth

SESSION_COOKIE = "saga_session"
CSRF_COOKIE = "saga_csrf"
CSRF_FIELD = "csrf"
COOKIE_PATH = "/ui"
_CSRF = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
#: the operator name the saga history records when the dashboard runs without tokens
ANONYMOUS = "dashboard"


class Forbidden(Exception):
    """A request refused for who sent it or how; the message is safe to show."""


@dataclass(frozen=True)
class Visitor:
    #: None when no tokens are configured (loopback only): everyone may do everything
    caller: auth.Caller | None
    #: authenticated by an Authorization header (not the cookie): no CSRF token needed
    by_header: bool
    #: the CSRF token this visitor's forms carry
    csrf: str
    #: the CSRF cookie must be set on the response (there was none, or not a valid one)
    new_csrf: bool

    @property
    def name(self) -> str:
        return self.caller.name if self.caller else ANONYMOUS

    @property
    def role(self) -> str:
        return self.caller.role if self.caller else "operate"

    def may(self, role: auth.Role) -> bool:
        return self.caller is None or self.caller.may(role)


def encode(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode("ascii")).decode("ascii").rstrip("=")


def decode(value: str) -> str:
    """The token a session cookie holds; `Unauthenticated` when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return raw.decode("ascii")
    except (binascii.Error, ValueError):
        raise auth.Unauthenticated("the session cookie is not valid: log in again") from None


def csrf_token(request: web.Request) -> tuple[str, bool]:
    """The CSRF token of this browser, and whether it is new (to be set as a cookie)."""
    value = request.cookies.get(CSRF_COOKIE, "")
    if _CSRF.fullmatch(value):
        return value, False
    return secrets.token_urlsafe(32), True


def identify(request: web.Request, tokens: auth.Tokens) -> Visitor:
    """The visitor, or `auth.Unauthenticated` (tokens configured, none valid presented)."""
    csrf, new = csrf_token(request)
    header = request.headers.get("Authorization")
    if not tokens:
        return Visitor(None, header is not None, csrf, new)
    if header is not None:
        return Visitor(tokens.identify(header), True, csrf, new)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise auth.Unauthenticated("log in with a token (or send 'Authorization: Bearer <token>')")
    token = decode(cookie)
    try:
        caller = tokens.identify(f"Bearer {token}")
    except auth.Unauthenticated:
        raise auth.Unauthenticated(
            "your session's token is no longer valid: log in again"
        ) from None
    return Visitor(caller, False, csrf, new)


def check_post(request: web.Request, visitor: Visitor, form_csrf: str | None) -> None:
    """`Forbidden` unless the POST comes from this site (see the module docstring)."""
    origin = request.headers.get("Origin")
    # "null": a browser that hides the origin (privacy settings); the CSRF token decides
    if origin not in (None, "null") and urlsplit(origin).netloc != request.host:
        raise Forbidden("the form was sent from another site (Origin does not match)")
    if visitor.by_header:
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not form_csrf or not cookie or not hmac.compare_digest(form_csrf, cookie):
        raise Forbidden("the form's CSRF token is missing or stale: reload the page and retry")


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.secure or None,
    )


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
