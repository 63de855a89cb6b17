"""Rendering the dashboard's templates (Jinja2) into responses.

Autoescaping is on for every template, and undefined names are errors: saga data, ids, error
messages and dead-letter headers are input from anyone who can write to Kafka, so nothing
reaches a page unescaped. Every response also carries a Content-Security-Policy that allows
scripts and styles from this server only (no inline script), so even a missed escape could not
run one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from orchestrator.ops.ui import session

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make form POSTs say Origin: null
    "Cache-Control": "no-store",
}


def pretty_json(raw: str) -> str:
    """Saga data as indented JSON; text that is not JSON as it is."""
    try:
        return orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return raw


def trace_id(traceparent: str) -> str:
    """The trace id of a W3C traceparent (`00-<trace id>-<span id>-<flags>`), else ''."""
    parts = traceparent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return ""


def url_part(value: Any) -> str:
    """One path segment: every character that could end it or the URL is %-encoded."""
    return quote(str(value), safe="")


def query(params: dict[str, Any], **changes: Any) -> str:
    """A query string from `params` with `changes` applied; empty values are left out."""
    merged = {**params, **changes}
    pairs: list[tuple[str, str]] = []
    for k, v in merged.items():
        for item in v if isinstance(v, list | tuple) else [v]:
            if item not in (None, ""):
                pairs.append((k, str(item)))
    return urlencode(pairs)


def ago(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172_800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def ms_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(pretty_json=pretty_json, url_part=url_part, ago=ago, ms_time=ms_time)
env.globals.update(trace_id=trace_id, query=query, CSRF_FIELD=session.CSRF_FIELD)


def secure(response: web.StreamResponse, request: web.Request, visitor: Any) -> None:
    """The security headers, and the CSRF cookie when this visitor has none yet."""
    response.headers.update(SECURITY_HEADERS)
    if visitor is not None and visitor.new_csrf:
        session.set_cookie(response, request, session.CSRF_COOKIE, visitor.csrf)


def page(
    request: web.Request,
    visitor: session.Visitor | None,
    template: str,
    status: int = 200,
    **context: Any,
) -> web.Response:
    """A whole page (or, for names starting with `_`, a fragment) as an HTML response."""
    html = env.get_template(template).render(visitor=visitor, path=request.path, **context)
    response = web.Response(status=status, text=html, content_type="text/html", charset="utf-8")
    secure(response, request, visitor)
    return response
