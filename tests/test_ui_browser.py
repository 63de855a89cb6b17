"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright) on the real
stack: an operator logs in, finds a saga that needs intervention, resumes it through the
confirmation page and watches the page refresh to its final state; replays a dead letter
after a dry run; a read-only token sees no action and is refused one; hostile saga data runs
no script.

SAGA_UI_SCREENSHOTS=docs/images saves the screenshots the README shows.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from orchestrator.ops import dlq
from schemas.config import Settings
from schemas.dlq import H_REPLAYED, header
from schemas.messages import SagaCommand
from tests.support.kafka import produce, read_all, wait_for
from tests.support.orch import SagaReader, running
from tests.support.scripted import Answer, ScriptedParticipant
from tests.test_http import ORDER, api_alone, free_port
from tests.test_http_auth import OPERATE, OPERATE_TOKEN, READ_TOKEN, TOKENS
from tests.test_ui_http import STEPS, XSS, hostile_saga

CHROMIUM = os.environ.get("SAGA_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("SAGA_UI_SCREENSHOTS", "")
#: generous: two cores shared by everything, and the page refreshes every few seconds
WAIT_MS = 60_000


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} missing (apt-get install chromium; scripts/test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        # Playwright's own browser download cannot run here: Debian's build, headless
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def new_page(browser: Any, dialogs: list[str]) -> Any:
    """A page in a fresh context (its own cookies) that records any dialog a script opens."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    return page


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


async def log_in(page: Any, base: str, token: str, where: str = "/ui") -> None:
    await page.goto(base + where)
    await page.fill("input[name=token]", token)
    await page.click("button:has-text('Log in')")
    await page.wait_for_url(base + where)


async def test_operator_resumes_a_saga_and_replays_a_dead_letter(
    settings: Settings, reader: SagaReader, tokens_file: Path, browser: Any
) -> None:
    from playwright.async_api import expect

    broken = {"on": True}

    def behaviour(cmd: SagaCommand) -> Answer:
        if cmd.saga_id != "web-stuck-1":
            return "ok"
        if cmd.step == "create_shipment" and not cmd.compensation:
            return "fail"
        return "fail" if cmd.compensation and broken["on"] else "ok"

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    poison = {"sagaId": "web-poison-1", "command": "StartOrder", "customerId": "c-9", "amount": 5}
    async with (
        ScriptedParticipant(settings, behaviour),
        running(settings, http_port=port, http_tokens_file=str(tokens_file)),
        httpx.AsyncClient(base_url=base, timeout=30, headers=OPERATE) as api,
    ):
        for sid in ("web-ok-1", "web-ok-2", "web-stuck-1"):
            r = await api.post("/api/orders", json={**ORDER, "sagaId": sid, "customerId": XSS})
            assert r.status_code == 202, r.text
        await produce(settings, settings.commands_topic, [(b"web-poison-1", orjson.dumps(poison))])
        await reader.wait_final(["web-ok-1", "web-ok-2", "web-stuck-1"])
        assert await reader.state("web-stuck-1") == "needs_intervention"

        async def dead_lettered() -> bool:
            return bool(await dlq.read(settings, dlq.Filter(saga="web-poison-1")))

        await wait_for(dead_lettered, 60, "the poison order in the DLQ", interval_s=0.2)

        dialogs: list[str] = []
        page = await new_page(browser, dialogs)
        await log_in(page, base, OPERATE_TOKEN)
        await expect(page.locator("#needs-intervention")).to_have_text("1")
        await expect(page.locator("#dlq-size")).to_have_text("1")
        await expect(page.locator("#completed-per-minute")).to_have_text("2")
        await shot(page, "dashboard-overview")

        # the list, then the saga
        await page.click("a.card[href*=needs_intervention]")
        await page.click("a:has-text('web-stuck-1')")
        await page.wait_for_url(f"{base}/ui/sagas/web-stuck-1")
        for step in STEPS:
            await expect(page.locator("#steps")).to_contain_text(step)
        await expect(page.locator("#saga-data")).to_contain_text('"<script>alert(')
        await expect(page.locator("#saga-state")).to_have_text("needs_intervention")
        await shot(page, "dashboard-saga")

        # resume: reason, confirmation, then the page follows the saga to its end
        broken["on"] = False
        await page.fill("#action-resume textarea[name=reason]", "refund fixed by the bank")
        await page.click("#action-resume button")
        await expect(page.locator("h1")).to_contain_text("Confirm: resume")
        assert await reader.state("web-stuck-1") == "needs_intervention"
        await shot(page, "dashboard-confirm")
        await page.click("#confirm button")
        await expect(page.locator("#sent")).to_contain_text("Sent resume")
        assert (await reader.wait_final(["web-stuck-1"]))["web-stuck-1"] == "failed"
        await expect(page.locator("#saga-state")).to_have_text("failed")  # the partial refresh
        notes = [h["note"] for h in await reader.history("web-stuck-1")]
        assert any("resume by ops-alice: refund fixed by the bank" in n for n in notes), notes

        # the dead letter: inspect, dry run (nothing sent), replay the fixed value
        await page.click("nav a:has-text('Dead letters')")
        await page.click("#letters a")
        await expect(page.locator("#error-message")).to_contain_text("missing items")
        await expect(page.locator("#headers")).to_contain_text("dlq-original-topic")
        position = (await page.locator("h1 .mono").inner_text()).strip()
        fixed = {**poison, "items": [{"productId": "sku-1", "quantity": 1}]}
        await page.fill("#replay textarea[name=value]", orjson.dumps(fixed).decode())
        await page.click("#replay button")
        await expect(page.locator("h1")).to_contain_text("Dry run")
        await shot(page, "dashboard-replay-dry-run")
        assert await reader.state("web-poison-1") is None
        await page.click("#confirm button")
        await expect(page.locator("h1")).to_contain_text("Replayed")
        sent_to = (await page.locator("#sent-to").inner_text()).strip()
        assert (await reader.wait_final(["web-poison-1"]))["web-poison-1"] == "completed"
        assert dialogs == []
    topic, partition, offset = sent_to.rsplit(":", 2)
    assert topic == settings.commands_topic
    records = await read_all(settings, settings.commands_topic, 2)
    [replayed] = [r for r in records if r.partition == int(partition) and r.offset == int(offset)]
    assert header(list(replayed.headers), H_REPLAYED) == position
    assert orjson.loads(replayed.value) == fixed


async def test_read_only_token_sees_pages_and_is_refused_actions(
    settings: Settings, tokens_file: Path, browser: Any
) -> None:
    """A read token sees a saga (hostile data as text, no script runs) without action forms;
    a POSTed action from its session, CSRF token and all, is a 403 page; a wrong token stays
    on the login page."""
    from playwright.async_api import expect

    await hostile_saga(settings, "web-hostile-1")
    async with api_alone(settings, http_tokens_file=str(tokens_file)) as http:
        base = str(http.base_url).rstrip("/")
        dialogs: list[str] = []
        page = await new_page(browser, dialogs)
        await page.goto(base + "/ui/sagas/web-hostile-1")
        await page.fill("input[name=token]", "wrong-0123456789abcdef-secret")
        await page.click("button:has-text('Log in')")
        await expect(page.locator(".alert.error")).to_have_text("That token is not valid.")
        await log_in(page, base, READ_TOKEN, "/ui/sagas/web-hostile-1")
        await expect(page.locator("#saga-id")).to_have_text("web-hostile-1")
        await expect(page.locator("#saga-data")).to_contain_text('"customer": "<script>alert(')
        await expect(page.locator("main")).to_contain_text("actions need operate")
        assert await page.locator("form.action").count() == 0
        assert await page.locator("script").count() == 1  # ui.js, nothing from the data
        for path in ("/ui", "/ui/sagas?state=needs_intervention", "/ui/stuck"):
            await page.goto(base + path)
            await expect(page.locator("main")).to_contain_text("type" + XSS[:20])
        cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
        refused = await page.request.post(
            base + "/ui/sagas/web-hostile-1/resume",
            form={"reason": "x", "csrf": cookies["saga_csrf"], "confirm": "yes"},
        )
        body = await refused.text()
    assert refused.status == 403, body
    assert "the role read; this needs operate" in body
    assert dialogs == []
