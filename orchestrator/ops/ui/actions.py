"""The dashboard's POSTs: the saga actions and the dead-letter replay, each in two steps (a
confirmation page, then the real thing), and logging in and out.

A saga action builds its command with `intervene.command`, exactly as `saga retry|abort|resume|
skip-compensation` and `POST /api/sagas/{id}/<action>` do, and sends it through the API's
producer on the events topic; the daemon applies it (or ignores it, if the saga moved on). The
dashboard asks a reason for every action (the CLI only for skip-compensation); it goes into the
saga history with the token's name as the operator.

A replay is planned with `dlq.plan` and sent with `dlq.send`, as `saga dlq replay` does: the
first POST is the dry run, showing exactly the topic, key, headers and value that would be sent;
the second, from that page, sends it.

(`signal`, which the issue names among the actions, is not offered: the engine has no signal
input to send. It would be one more entry here once the core accepts one.)
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from orchestrator.ops import InputError, RefusedError, auth, dlq, intervene, kafka, validate
from orchestrator.ops.ui import session
from orchestrator.ops.ui.context import Context
from orchestrator.ops.ui.pages import ACTION_HELP
from orchestrator.ops.ui.render import url_part

log = logging.getLogger("orchestrator.ops.ui")
_ACTIONS: dict[str, intervene.Action] = {a.replace("_", "-"): a for a in intervene.ACTIONS}
_NEXT = re.compile(r"/ui(?:[/?][A-Za-z0-9._~%&=+:-]*)*")  # where login may send you: our pages
MAX_REASON = 4096


def _field(form: Any, name: str, limit: int) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, not a file")
    if len(value) > limit:
        raise InputError(f"{name} is longer than {limit} characters")
    return value


async def saga_action(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    sid = validate.saga_id(request.match_info["id"])
    action = _ACTIONS.get(request.match_info["action"])
    if action is None:
        raise web.HTTPNotFound()
    form = await request.post()
    reason = _field(form, "reason", MAX_REASON).strip()
    step = _field(form, "step", 64).strip() or None
    if not reason:
        raise InputError("a reason is required: say why, it goes into the saga's history")
    status = await ui.query().status(sid)
    try:
        msg = intervene.command(status, action, step=step, reason=reason, operator=v.name)
    except ValidationError as exc:  # a hash written by something else than the engine
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise RefusedError(
            f"saga {sid}: its stored {where} cannot go into a command; fix the saga by hand"
        ) from None
    if form.get("confirm") != "yes":
        return ui.page(
            request,
            v,
            "confirm.html",
            s=status,
            action=action,
            action_path=action.replace("_", "-"),
            help=ACTION_HELP[action],
            step=step or "",
            reason=reason,
        )
    await ui.api.send(ui.api.s.events_topic, msg)
    log.info("ui: %s sent %s for saga %s (message %s)", v.name, action, sid, msg.message_id)
    raise web.HTTPSeeOther(
        f"/ui/sagas/{url_part(sid)}?sent={action}&messageId={url_part(msg.message_id)}"
    )


async def dlq_replay(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    partition, offset = validate.position(request.match_info["pos"])
    form = await request.post()
    value_text = _field(form, "value", ui.api.s.max_message_bytes)
    value = None
    if value_text.strip():
        value = value_text.encode()
        validate.json_object(value, "the replacement value")
    letter = await dlq.get(ui.api.s, partition, offset)
    planned = dlq.plan([letter], value)
    dry_run = form.get("confirm") != "yes"
    if not dry_run:
        async with kafka.producer(ui.api.s) as producer:
            await dlq.send(producer, planned)
        log.info(
            "ui: %s replayed dead letter %s to %s", v.name, letter.position, planned[0].sent_to
        )
    shown = [
        {
            **r.to_json(),
            "key": (r.letter.key or b"").decode(errors="replace"),
            "headers": [(k, (h or b"").decode(errors="replace")) for k, h in r.headers],
            "value": (r.value or b"").decode(errors="replace"),
        }
        for r in planned
    ]
    return ui.page(
        request,
        v,
        "replay.html",
        position=letter.position,
        records=shown,
        dry_run=dry_run,
        value_text=value_text,
    )


# ---- logging in and out ----


def safe_next(value: str) -> str:
    """Where to go after logging in: one of our pages, never another site."""
    return value if _NEXT.fullmatch(value) else "/ui"


def login_form(
    ui: Context,
    request: web.Request,
    visitor: session.Visitor | None = None,
    message: str = "",
    status: int = 200,
    nxt: str = "",
) -> web.Response:
    """The login page; `nxt` (default: the page asked for) is where a good token leads."""
    if not nxt:
        asked = request.path_qs if request.method == "GET" else "/ui"
        nxt = request.query.get("next", "/ui") if request.path == "/ui/login" else asked
    if visitor is None:
        csrf, new = session.csrf_token(request)
        visitor = session.Visitor(None, False, csrf, new)
    response = ui.page(request, visitor, "login.html", status, message=message, next=safe_next(nxt))
    if status == 401 and session.SESSION_COOKIE in request.cookies:
        session.clear_session(response)
    return response


async def login_page(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    if not ui.api.tokens:
        raise web.HTTPSeeOther("/ui")
    return login_form(ui, request, v)


async def login(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    form = await request.post()
    token = _field(form, "token", auth.MAX_TOKEN_CHARS).strip()
    nxt = safe_next(_field(form, "next", 2000))
    if not ui.api.tokens:
        raise web.HTTPSeeOther("/ui")
    try:
        who = ui.api.tokens.identify(f"Bearer {token}")
    except auth.Unauthenticated:
        log.info("ui: failed login from %s", request.remote)
        return login_form(ui, request, v, "That token is not valid.", 401, nxt)
    log.info("ui: %s (%s) logged in from %s", who.name, who.role, request.remote)
    response = web.HTTPSeeOther(nxt)
    session.set_cookie(response, request, session.SESSION_COOKIE, session.encode(token))
    raise response


async def logout(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    response = web.HTTPSeeOther("/ui/login" if ui.api.tokens else "/ui")
    session.clear_session(response)
    raise response
