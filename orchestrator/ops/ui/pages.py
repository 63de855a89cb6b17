"""The dashboard's pages (GET): overview, saga list and search, one saga, stuck sagas, dead
letters. Each parses its query with `orchestrator.ops.validate`, asks `SagaQuery` or
`orchestrator.ops.dlq` (what `saga status|list|stuck|dlq` and the JSON API ask), and renders a
template. A bad filter is a 400 page saying what is wrong, as on the command line."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from orchestrator.core.model import StepStatus
from orchestrator.ops import InputError, OpsError, dlq, intervene, validate
from orchestrator.ops.query import SagaStatus
from orchestrator.ops.ui import reads, session
from orchestrator.ops.ui.context import Context
from orchestrator.ops.ui.render import url_part

PAGE_SIZE = 50
#: the list pages through at most this many sagas (the API's limit too)
MAX_ROWS = 10_000
MAX_TEXT = 200
DLQ_READ_TIMEOUT_S = 20

ACTION_HELP = {
    "retry": "Re-issue the current step (going forward) or the current compensation (going back).",
    "abort": "Stop going forward and compensate the finished steps now.",
    "resume": "Leave needs_intervention once the cause is fixed: the compensation is issued again.",
    "skip_compensation": "Record that a step's compensation was done by hand (the reason goes "
    "into the history) and go on with the others.",
}
_COMPENSATION_OPEN = (
    StepStatus.COMPENSATING.value,
    StepStatus.COMPENSATION_WAIT.value,
    StepStatus.COMPENSATION_FAILED.value,
)


def _text(request: web.Request, name: str) -> str:
    value = request.query.get(name, "").strip()
    if len(value) > MAX_TEXT:
        raise InputError(f"{name} is longer than {MAX_TEXT} characters")
    return value


def _page_number(request: web.Request, last: int) -> int:
    raw = request.query.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= last:
        raise InputError(f"page must be a whole number from 1 to {last}")
    return int(raw)


async def to_overview(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    raise web.HTTPFound("/ui")


async def overview(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    ov = await reads.overview(ui.query(), ui.api.s)
    return ui.page(request, v, "overview.html", ov=ov)


async def overview_partial(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    ov = await reads.overview(ui.query(), ui.api.s)
    return ui.page(request, v, "_overview.html", ov=ov)


async def saga_list(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    """Filters: state (repeatable), type, older (a duration in the state); or q, a saga id or a
    correlation id. Oldest in their state first, `PAGE_SIZE` a page."""
    states = [validate.state(s) for s in request.query.getall("state", [])]
    saga_type, older, q = _text(request, "type"), _text(request, "older"), _text(request, "q")
    older_ms = validate.duration_ms(older) if older else 0
    page = _page_number(request, MAX_ROWS // PAGE_SIZE)
    params: dict[str, Any] = {"state": states, "type": saga_type, "older": older, "q": q}
    query = ui.query()
    note = ""
    if q:
        try:
            sid = validate.saga_id(q)
        except InputError:
            sid = ""
        if sid and await query.exists(sid):
            raise web.HTTPSeeOther(f"/ui/sagas/{url_part(sid)}")
        items, capped = await reads.by_correlation_id(query, q, MAX_ROWS)
        note = f"no saga has the id {q!r}; sagas with the correlation id {q!r}"
        if capped:
            note += f" (among the newest {reads.SEARCH_CAP} of each state)"
    else:
        items = await query.find(states or None, saga_type or None, older_ms, page * PAGE_SIZE + 1)
    start = (page - 1) * PAGE_SIZE
    rows = items[start : start + PAGE_SIZE]
    return ui.page(
        request,
        v,
        "list.html",
        rows=rows,
        page=page,
        has_next=len(items) > start + PAGE_SIZE and page * PAGE_SIZE < MAX_ROWS,
        params=params,
        all_states=validate.STATES,
        note=note,
    )


def available_actions(s: SagaStatus) -> list[dict[str, Any]]:
    """The actions `intervene.check` accepts for the saga as it is now, with the steps
    skip-compensation may name; the forms offer only these (the daemon decides again)."""
    out = []
    for action in intervene.ACTIONS:
        steps: list[str] = []
        try:
            if action == "skip_compensation":
                steps = [st.name for st in s.steps if st.status in _COMPENSATION_OPEN]
                if not steps:
                    continue
                intervene.check(s, action, steps[0])
            else:
                intervene.check(s, action)
        except OpsError:
            continue
        out.append(
            {
                "action": action,
                "path": action.replace("_", "-"),
                "label": action.replace("_", " ").capitalize(),
                "help": ACTION_HELP[action],
                "steps": steps,
            }
        )
    return out


async def saga(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    sid = validate.saga_id(request.match_info["id"])
    status = await ui.query().status(sid)
    sent = request.query.get("sent", "")
    return ui.page(
        request,
        v,
        "saga.html",
        s=status,
        actions=available_actions(status),
        sent=sent if sent in intervene.ACTIONS else "",
        message_id=request.query.get("messageId", "")[:64],
        action_help=ACTION_HELP,
    )


async def saga_partial(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    sid = validate.saga_id(request.match_info["id"])
    return ui.page(request, v, "_saga.html", s=await ui.query().status(sid))


async def stuck(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    older = _text(request, "older") or f"{round(ui.api.s.stuck_after_s)}s"  # as /metrics
    items = await ui.query().stuck(validate.duration_ms(older), reads.STUCK_CAP)
    return ui.page(
        request, v, "stuck.html", rows=items, older=older, capped=len(items) >= reads.STUCK_CAP
    )


async def dlq_list(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    """Dead letters, newest first, filtered like `saga dlq list`."""
    reason, saga_id = _text(request, "reason"), _text(request, "saga")
    flt = dlq.Filter(reason=reason or None, saga=validate.saga_id(saga_id) if saga_id else None)
    letters = await dlq.read(ui.api.s, flt, timeout_s=DLQ_READ_TIMEOUT_S)
    letters.sort(key=lambda d: (d.time_ms, d.partition, d.offset), reverse=True)
    last = max(1, -(-len(letters) // PAGE_SIZE))
    page = _page_number(request, last)
    start = (page - 1) * PAGE_SIZE
    return ui.page(
        request,
        v,
        "dlq.html",
        rows=[d.to_json() for d in letters[start : start + PAGE_SIZE]],
        total=len(letters),
        page=page,
        has_next=page < last,
        params={"reason": reason, "saga": saga_id},
    )


async def dlq_record(ui: Context, request: web.Request, v: session.Visitor) -> web.Response:
    partition, offset = validate.position(request.match_info["pos"])
    letter = await dlq.get(ui.api.s, partition, offset, timeout_s=DLQ_READ_TIMEOUT_S)
    return ui.page(request, v, "dlq_record.html", d=letter.to_json(full=True))
