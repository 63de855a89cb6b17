"""The dashboard over plain HTTP on the real stack: pages name the saga and its steps for a
read token, the login cookie and the CSRF token, 401/403 pages, actions in two steps, and
hostile input (saga data, ids, dead letters, query strings, forms) rendered as text."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from orchestrator.engine.keys import Keys
from orchestrator.ops.query import now_ms
from orchestrator.ops.ui import session
from schemas import codec
from schemas.config import Settings
from schemas.messages import OperatorCommand, SagaCommand
from tests.support.kafka import produce, read_all, wait_for
from tests.support.orch import SagaReader, running
from tests.support.scripted import Answer, ScriptedParticipant
from tests.test_http import ORDER, api_alone, free_port
from tests.test_http_auth import OPERATE, OPERATE_TOKEN, READ, READ_TOKEN, TOKENS

STEPS = ("reserve_inventory", "process_payment", "create_shipment", "send_confirmation")
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>"\'&'
#: what must never appear raw in a page that shows XSS
RAW = ("<script>alert", "<img src=x")
#: without tokens any Authorization header marks a request as not from a browser form (no CSRF)
ANY = {"Authorization": "x"}
RETRY, RESUME = "/ui/sagas/hostile-1/retry", "/ui/sagas/hostile-1/resume"


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    return path


def assert_html(r: httpx.Response, status: int, *needles: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:2000])
    assert r.headers["content-type"].startswith("text/html"), r.headers
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "Traceback" not in r.text
    for needle in needles:
        assert needle in r.text, (needle, r.text[:3000])


def assert_escaped(html: str) -> None:
    for raw in RAW:
        assert raw not in html, html[:3000]
    assert "&lt;script&gt;alert(" in html


async def hostile_saga(settings: Settings, saga_id: str, saga_type: str = f"type{XSS}") -> None:
    """A saga hash, history and index entry written straight into Redis with markup in every
    field a page shows: whatever the engine let in, the pages must show as text."""
    from tests.support.orch import SagaReader

    keys = Keys(settings.key_prefix)
    reader = SagaReader(settings)
    try:
        now = now_ms()
        fields = {
            "saga_id": saga_id,
            "type": saga_type,
            "definition_version": "1",
            "state": "needs_intervention",
            "current_step": f"step{XSS}",
            "version": "3",
            "created_at": f"2024-01-01T00:00:00+00:00{XSS}",
            "updated_at": "2024-01-01T00:00:00+00:00",
            "state_entered_at": "2024-01-01T00:00:00+00:00",
            "last_error": f"error{XSS}",
            "correlation_id": f"corr{XSS}",
            "traceparent": f"00-{'a' * 32}-{'b' * 16}-01",
            "data": orjson.dumps({"customer": XSS, XSS: [XSS]}).decode(),
            f"step.s{XSS}.status": "compensation_failed",
            f"step.s{XSS}.attempts": "2",
            f"step.s{XSS}.error": f"boom{XSS}",
            f"step.s{XSS}.result": XSS,
        }
        await reader.redis.hset(keys.saga(saga_id), mapping=fields)
        await reader.redis.xadd(
            keys.history(saga_id),
            {"at": XSS, "event": XSS, "outcome": XSS, "state": XSS, "note": XSS},
        )
        await reader.redis.zadd(keys.index("needs_intervention"), {saga_id: now - 3_600_000})
    finally:
        await reader.aclose()


async def login(http: httpx.AsyncClient, token: str) -> httpx.Response:
    """Log in through the form, as a browser would: the login page sets the CSRF cookie."""
    page = await http.get("/ui/login")
    csrf = http.cookies[session.CSRF_COOKIE]
    assert f'value="{csrf}"' in page.text
    return await http.post("/ui/login", data={"token": token, "csrf": csrf, "next": "/ui/stuck"})


def csrf_of(http: httpx.AsyncClient) -> str:
    return http.cookies[session.CSRF_COOKIE]


@contextlib.asynccontextmanager
async def client(port: int, **kw: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, **kw) as http:
        yield http


async def test_read_token_sees_the_saga_and_its_steps(
    settings: Settings, reader: SagaReader, tokens_file: Path
) -> None:
    """`curl -H 'Authorization: Bearer <read token>' /ui` and `/ui/sagas/<id>`: HTML naming the
    saga, its type, its steps with their status, the timeline, the data and the trace id; the
    list, search, stuck, DLQ and partial pages answer too; read tokens get no action forms."""
    port = free_port()
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with (
        ScriptedParticipant(settings),
        running(settings, http_port=port, http_tokens_file=str(tokens_file)),
        client(port, headers=READ) as http,
    ):
        started = await http.post(
            "/api/orders",
            json={**ORDER, "sagaId": "ui-read-1"},
            headers={**OPERATE, "traceparent": tp},
        )
        assert started.status_code == 202, started.text
        assert (await reader.wait_final(["ui-read-1"]))["ui-read-1"] == "completed"

        async def counted() -> bool:
            page = await http.get("/ui/partials/overview")
            return 'id="completed-per-minute">1<' in page.text

        await wait_for(counted, 30, "the overview to count the completion")
        overview = await http.get("/ui")
        saga = await http.get("/ui/sagas/ui-read-1")
        partial = await http.get("/ui/partials/sagas/ui-read-1")
        listed = await http.get(
            "/ui/sagas", params={"state": "completed", "type": "order_fulfillment"}
        )
        others = await http.get("/ui/sagas", params={"state": "failed"})
        found = await http.get("/ui/sagas", params={"q": "ui-read-1"})
        by_corr = await http.get("/ui/sagas", params={"q": "no-such-correlation"})
        stuck = await http.get("/ui/stuck", params={"older": "1s"})
        dlq = await http.get("/ui/dlq")
        css = await http.get("/ui/static/app.css")
        js = await http.get("/ui/static/ui.js")
    assert_html(overview, 200, "Overview", 'id="needs-intervention">0<', 'id="dlq-size">0<')
    assert "order_fulfillment" in overview.text
    assert_html(
        saga, 200, "ui-read-1", "order_fulfillment", "completed", "0af7651916cd43dd8448eb211c80319c"
    )
    for step in STEPS:
        assert re.search(rf"{step}</td>\s*<td><span class=\"badge step-completed\">", saga.text), (
            step
        )
    assert "sku-1" in saga.text  # the data
    assert "actions need <code>operate</code>" in saga.text and "<textarea" not in saga.text
    assert_html(partial, 200, "send_confirmation")
    assert "<html" not in partial.text  # a fragment, not a page
    assert_html(listed, 200, "/ui/sagas/ui-read-1")
    assert "ui-read-1" not in others.text
    assert found.status_code == 303 and found.headers["location"] == "/ui/sagas/ui-read-1"
    assert_html(by_corr, 200, "no saga has the id", "No sagas.")
    assert_html(stuck, 200, "No sagas.")
    assert_html(dlq, 200, "No dead letters.")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert js.status_code == 200 and "data-refresh" in js.text


async def test_login_cookie_csrf_and_roles(settings: Settings, tokens_file: Path) -> None:
    """Without a token a page is a 401 login form; the form sets an HttpOnly, SameSite=Strict
    session cookie for /ui only and goes back where it was asked (never off-site); a POST needs
    the CSRF token and a same-site Origin; a read token's action is a 403 page; log out ends
    the session; a bad token is a 401 page."""
    async with (
        api_alone(settings, http_tokens_file=str(tokens_file)) as anon,
        client(int(anon.base_url.port or 0)) as browser,
        client(int(anon.base_url.port or 0)) as reader_browser,
    ):
        nothing = await anon.get("/ui/sagas/x-1")
        bad = await anon.get("/ui", headers={"Authorization": "Bearer wrong-0123456789abcdef"})
        cookie = f"{session.SESSION_COOKIE}={session.encode(OPERATE_TOKEN)}"
        cookie_on_api = await anon.get("/api/sagas", headers={"Cookie": cookie})
        wrong = await login(browser, "wrong-0123456789abcdef-secret")
        off_site = await browser.post(
            "/ui/login",
            data={
                "token": OPERATE_TOKEN,
                "csrf": csrf_of(browser),
                "next": "https://evil.example/",
            },
        )
        no_csrf_login = await anon.post("/ui/login", data={"token": OPERATE_TOKEN})
        ok = await login(browser, OPERATE_TOKEN)
        set_cookie = ok.headers.get_list("set-cookie")
        page = await browser.get("/ui")
        no_csrf = await browser.post("/ui/sagas/x-1/abort", data={"reason": "r"})
        bad_csrf = await browser.post("/ui/sagas/x-1/abort", data={"reason": "r", "csrf": "A" * 43})
        cross_site = await browser.post(
            "/ui/sagas/x-1/abort",
            data={"reason": "r", "csrf": csrf_of(browser)},
            headers={"Origin": "https://evil.example"},
        )
        allowed = await browser.post(
            "/ui/sagas/x-1/abort", data={"reason": "r", "csrf": csrf_of(browser)}
        )
        await login(reader_browser, READ_TOKEN)
        read_action = await reader_browser.post(
            "/ui/sagas/x-1/abort", data={"reason": "r", "csrf": csrf_of(reader_browser)}
        )
        read_header_action = await anon.post(
            "/ui/sagas/x-1/retry", data={"reason": "r"}, headers=READ
        )
        read_replay = await anon.post("/ui/dlq/0:0/replay", data={}, headers=READ)
        out = await browser.post("/ui/logout", data={"csrf": csrf_of(browser)})
        after = await browser.get("/ui")
    assert_html(nothing, 401, "Log in", 'name="token"', 'value="/ui/sagas/x-1"')
    assert_html(bad, 401, "unknown token")
    assert cookie_on_api.status_code == 401  # the cookie is the dashboard's, not the API's
    assert_html(wrong, 401, "That token is not valid.")
    assert off_site.status_code == 303 and off_site.headers["location"] == "/ui"
    assert_html(no_csrf_login, 403, "CSRF")
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/stuck"
    [session_cookie] = [c for c in set_cookie if c.startswith(session.SESSION_COOKIE + "=")]
    attrs = {a.strip().lower() for a in session_cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attrs, session_cookie
    assert OPERATE_TOKEN not in session_cookie  # encoded, and only for /ui
    assert_html(page, 200, "ops-alice", "operate", "Log out")
    assert_html(no_csrf, 403, "CSRF")
    assert_html(bad_csrf, 403, "CSRF")
    assert_html(cross_site, 403, "another site")
    assert_html(allowed, 404, "no saga")  # past auth and CSRF: the saga does not exist
    for refused in (read_action, read_header_action, read_replay):
        assert_html(refused, 403, "the role read; this needs operate")
    assert out.status_code == 303
    assert_html(after, 401, "Log in")


async def test_actions_confirm_then_send(
    settings: Settings, reader: SagaReader, tokens_file: Path
) -> None:
    """On a saga in needs_intervention: the forms offer retry, resume and skip-compensation; a
    POST without a reason is a 400, the first POST a confirmation page that changes nothing,
    the confirmed one sends the command and the saga moves; a final saga's action is a 409."""

    def behaviour(cmd: SagaCommand) -> Answer:
        if cmd.step == "create_shipment" and not cmd.compensation:
            return "fail"
        return "fail" if cmd.compensation and cmd.step == "process_payment" else "ok"

    port = free_port()
    async with (
        ScriptedParticipant(settings, behaviour),
        running(settings, http_port=port, http_tokens_file=str(tokens_file)),
        client(port, headers=OPERATE) as http,
    ):
        await http.post("/api/orders", json={**ORDER, "sagaId": "ui-act-1"})

        async def needs_person() -> bool:
            return await reader.state("ui-act-1") == "needs_intervention"

        await wait_for(needs_person, 60, "needs_intervention")
        page = await http.get("/ui/sagas/ui-act-1")
        version = (await reader.fields("ui-act-1"))["version"]
        form = {"step": "process_payment"}
        no_reason = await http.post("/ui/sagas/ui-act-1/skip-compensation", data=form)
        confirm = await http.post(
            "/ui/sagas/ui-act-1/skip-compensation", data={**form, "reason": f"refunded {XSS}"}
        )
        unchanged = (await reader.fields("ui-act-1"))["version"]
        sent = await http.post(
            "/ui/sagas/ui-act-1/skip-compensation",
            data={**form, "reason": f"refunded {XSS}", "confirm": "yes"},
        )

        async def failed() -> bool:
            return await reader.state("ui-act-1") == "failed"

        await wait_for(failed, 60, "the skipped compensation to finish the saga")
        after = await http.get(sent.headers["location"])
        final = await http.post(
            "/ui/sagas/ui-act-1/retry", data={"reason": "again", "confirm": "yes"}
        )
        unknown = await http.post("/ui/sagas/ui-act-1/explode", data={"reason": "x"})
    assert_html(page, 200, 'id="action-resume"', 'id="action-skip-compensation"')
    assert 'id="action-retry"' in page.text  # the failed compensation, again
    assert 'id="action-abort"' not in page.text
    assert_html(no_reason, 400, "a reason is required")
    assert_html(confirm, 200, "Confirm: skip-compensation", 'name="confirm" value="yes"')
    assert_escaped(confirm.text)
    assert unchanged == version
    assert sent.status_code == 303 and "sent=skip_compensation" in sent.headers["location"]
    assert_html(after, 200, "Sent skip-compensation", "failed")
    assert_escaped(after.text)
    assert_html(final, 409, "it is final")
    assert_html(unknown, 404)
    f = await reader.fields("ui-act-1")
    assert f["step.process_payment.status"] == "compensation_skipped"
    notes = [h["note"] for h in await reader.history("ui-act-1")]
    assert any(
        "skip_compensation process_payment by ops-alice: refunded <script>" in n for n in notes
    )


async def test_hostile_saga_data_ids_and_queries_are_text(settings: Settings) -> None:
    """Markup in every saga field, in the history, in dead-letter keys, headers and values, in
    path and query parameters and in forms: pages show it escaped, bad input is a 4xx page."""
    await hostile_saga(settings, "hostile-1")
    headers = [
        ("saga-id", XSS.encode()),
        ("dlq-original-topic", settings.commands_topic.encode()),
        ("dlq-original-partition", b"0"),
        ("dlq-original-offset", b"7"),
        ("dlq-error-class", XSS.encode()),
        ("dlq-error-message", f"bad {XSS}".encode()),
        ("dlq-time", b"2024-05-01T10:00:00+00:00"),
        (XSS, XSS.encode()),
    ]
    await produce(settings, settings.dlq_topic, [(XSS.encode(), orjson.dumps({"x": XSS}))], headers)
    async with api_alone(settings) as http:
        saga = await http.get("/ui/sagas/hostile-1")
        partial = await http.get("/ui/partials/sagas/hostile-1")
        listed = await http.get("/ui/sagas", params={"state": "needs_intervention"})
        overview = await http.get("/ui")
        by_corr = await http.get("/ui/sagas", params={"q": f"corr{XSS}"})
        stuck = await http.get("/ui/stuck")
        letters = await http.get("/ui/dlq")

        async def one_letter() -> str:
            pos = re.search(r'href="/ui/dlq/(\d+%3A\d+)"', letters.text)
            assert pos, letters.text[:3000]
            return pos.group(1)

        record = await http.get(f"/ui/dlq/{await one_letter()}")
        dry = await http.post(
            f"/ui/dlq/{await one_letter()}/replay",
            data={"value": orjson.dumps({"fixed": XSS}).decode()},
            headers=ANY,
        )
        bad_pages = [
            (await http.get("/ui/sagas/%3Cscript%3Ealert(1)"), 400),
            (await http.get("/ui/sagas", params={"state": XSS}), 400),
            (await http.get("/ui/sagas", params={"older": XSS}), 400),
            (await http.get("/ui/sagas", params={"page": "-1"}), 400),
            (await http.get("/ui/sagas", params={"page": "99999999999999999999"}), 400),
            (await http.get("/ui/sagas", params={"type": "x" * 500}), 400),
            (await http.get("/ui/stuck", params={"older": XSS}), 400),
            (await http.get("/ui/dlq", params={"saga": XSS}), 400),
            (await http.get("/ui/dlq/%3Cscript%3Ealert(1)"), 400),
            (await http.get("/ui/dlq/0:99999"), 404),
            (await http.get("/ui/static/..%2F..%2Fhttp.py"), 404),
            (await http.get("/ui/static/app.py"), 404),
            (await http.post("/ui/dlq/0:0/replay", data={"value": "[1]"}, headers=ANY), 400),
            (await http.post(RETRY, data={"reason": "x" * 5000}, headers=ANY), 400),
            (await http.post(RETRY, files={"reason": ("f", b"x")}, headers=ANY), 400),
            (await http.post("/ui/sagas/hostile-1/resume", data={"reason": "x"}), 403),  # CSRF
            # a type the engine would never store cannot go into a command: refused, not a 500
            (await http.post(RESUME, data={"reason": "x", "confirm": "yes"}, headers=ANY), 409),
        ]  # fmt: skip
    for page in (saga, partial, listed, overview, stuck, letters, record, dry):
        assert page.status_code == 200, (page.status_code, page.text[:2000])
        assert_escaped(page.text)
    assert_html(saga, 200, "a" * 32, 'id="action-resume"')  # the trace id; actions offered
    assert "&lt;img src=x onerror=alert(1)&gt;" in saga.text
    assert "/ui/sagas/hostile-1" in listed.text
    assert "type&lt;script&gt;" in overview.text
    assert "/ui/sagas/hostile-1" in by_corr.text
    assert "Dry run" in dry.text and "Replay now" in dry.text
    for page, status in bad_pages:
        assert_html(page, status)
        assert "<script>alert" not in page.text
    # nothing was replayed by the dry run: the commands topic is still empty
    assert await read_all(settings, settings.commands_topic, 1, timeout_s=2) == []


async def test_a_confirmed_action_is_one_operator_command_on_the_events_topic(
    settings: Settings,
) -> None:
    """Without tokens (loopback only) the operator is "dashboard"; the confirmed action is one
    OperatorCommand on the events topic with the reason, the same the CLI and API send."""
    await hostile_saga(settings, "hostile-2", "order_fulfillment")
    async with api_alone(settings) as http:
        page = await http.get("/ui/sagas/hostile-2")
        csrf = http.cookies[session.CSRF_COOKIE]
        assert f'value="{csrf}"' in page.text
        sent = await http.post(
            "/ui/sagas/hostile-2/resume",
            data={"reason": "disk replaced", "csrf": csrf, "confirm": "yes"},
        )
    assert sent.status_code == 303, sent.text
    [record] = await read_all(settings, settings.events_topic, 1)
    msg = codec.decode(record.value)
    assert isinstance(msg, OperatorCommand)
    assert (msg.saga_id, msg.action, msg.reason, msg.operator) == (
        "hostile-2",
        "resume",
        "disk replaced",
        "dashboard",
    )
