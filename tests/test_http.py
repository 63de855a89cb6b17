"""The HTTP API, /metrics, /livez and /readyz of a running orchestrator on the real stack."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx

from orchestrator.engine.sagas import SagaModules
from orchestrator.ops.http import HttpApi
from orchestrator.telemetry.metrics import Metrics
from schemas.config import Settings
from schemas.messages import SagaCommand
from tests.support.kafka import wait_for
from tests.support.orch import SagaReader, orchestrator_settings, running
from tests.support.scripted import Answer, ScriptedParticipant

ORDER = {"customerId": "c-1", "items": [{"productId": "sku-1", "quantity": 2}], "amount": "9.99"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(text: str, name: str, labels: str = "", missing_ok: bool = False) -> float:
    """A sample's value. A missing sample fails the test (so `== 0` means a real zero), unless
    `missing_ok`, where it reads as None-like 0 for polling before the series exists."""
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    m = re.search(pattern, text, re.MULTILINE)
    if m is None and not missing_ok:
        raise AssertionError(f"{name}{labels} is not in /metrics")
    return float(m.group(1)) if m else 0.0


def assert_json_error(r: httpx.Response, status: int, needle: str = "") -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and needle.lower() in body["error"].lower(), body
    assert "Traceback" not in r.text


async def test_orders_status_list_and_metrics(settings: Settings, reader: SagaReader) -> None:
    """POST /api/orders starts sagas (camelCase or snake_case, id optional); GET returns status
    and timeline under both paths; lists filter by state; /metrics moves as sagas run."""
    port = free_port()
    async with (
        ScriptedParticipant(settings),
        running(settings, http_port=port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        before = (await http.get("/metrics")).text
        assert (await http.get("/livez")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        camel = await http.post(
            "/api/orders", json={**ORDER, "sagaId": "http-1"}, headers={"traceparent": tp}
        )
        snake = await http.post(
            "/api/orders",
            json={"customer_id": "c", "items": [{"product_id": "s", "quantity": 1}], "amount": 1},
        )
        assert camel.status_code == 202 and camel.json()["sagaId"] == "http-1"
        assert snake.status_code == 202
        gen = snake.json()["sagaId"]
        states = await reader.wait_final(["http-1", gen])
        by_id = (await http.get("/api/sagas/http-1")).json()
        by_status_path = (await http.get("/api/sagas/http-1/status")).json()
        listed = (await http.get("/api/sagas", params={"state": "completed"})).json()
        none_old = (await http.get("/api/sagas", params={"olderThan": "1h"})).json()
        stuck = (await http.get("/api/sagas", params={"stuck": "1", "olderThan": "1s"})).json()

        async def metrics_moved() -> bool:
            text = (await http.get("/metrics")).text
            return metric(text, "saga_sagas", '{state="completed"}', missing_ok=True) == 2

        await wait_for(metrics_moved, 30, "sagas by state in /metrics")
        after = (await http.get("/metrics")).text
    assert set(states.values()) == {"completed"}
    assert by_id == by_status_path
    assert by_id["state"] == "completed" and by_id["traceparent"] == tp
    assert [h["state"] for h in by_id["timeline"]][-1] == "completed"
    assert {s["saga_id"] for s in listed["sagas"]} == {"http-1", gen}
    assert none_old["sagas"] == [] and stuck["sagas"] == []
    assert metric(before, "saga_sagas_started_total") == 0
    assert metric(after, "saga_sagas_started_total") == 2
    assert metric(after, "saga_sagas_completed_total") == 2
    assert metric(after, "saga_step_latency_seconds_count") == 8
    assert metric(after, "saga_step_latency_seconds_bucket", '{le="+Inf"}') == 8
    assert metric(after, "saga_step_latency_seconds_sum") > 0
    assert metric(after, "saga_commands_sent_total") == 8
    assert metric(after, "saga_outbox_depth") == 0
    assert metric(after, "saga_assigned_partitions") == 3  # each of the 3 once, not per topic
    assert metric(after, "saga_redis_up") == 1
    assert "# TYPE saga_consumer_lag gauge" in after
    assert re.search(r"^saga_consumer_lag_records [0-9]+$", after, re.MULTILINE)


async def test_bad_requests_get_json_errors(settings: Settings) -> None:
    """Invalid JSON, wrong content type, oversized body, invalid orders, bad ids and filters,
    unknown sagas and routes: each a 4xx with a JSON error body, never a 500."""
    port = free_port()
    async with (
        running(settings, http_port=port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        json_ct = {"content-type": "application/json"}
        cases: list[tuple[Any, int, str]] = [
            (http.post("/api/orders", content=b'{"customerId": ', headers=json_ct), 400, "JSON"),
            (http.post("/api/orders", content=b"[1]", headers=json_ct), 400, "object"),
            (http.post("/api/orders", content=b"a=b", headers={"content-type": "text/plain"}),
             415, "application/json"),
            (http.post("/api/orders", content=b"{" + b" " * 1_100_000 + b"}", headers=json_ct),
             413, ""),
            (http.post("/api/orders"), 400, "body is required"),
            (http.post("/api/orders", json={"customerId": "c", "amount": 1}), 400, "missing items"),
            (http.post("/api/orders", json={**ORDER, "sagaId": "a b"}), 400, "sagaId"),
            (http.get("/api/sagas/nobody"), 404, "no saga"),
            (http.get("/api/sagas/nobody/status"), 404, "no saga"),
            (http.get("/api/sagas/a%20b"), 400, "invalid saga id"),
            (http.get("/api/sagas", params={"state": "bogus"}), 400, "invalid state"),
            (http.get("/api/sagas", params={"olderThan": "10x"}), 400, "invalid duration"),
            (http.get("/api/sagas", params={"limit": "many"}), 400, "limit"),
            (http.post("/api/sagas/nobody/retry"), 404, "no saga"),
            (http.post("/api/sagas/nobody/explode"), 404, ""),
            (http.get("/nowhere"), 404, ""),
            (http.delete("/api/orders"), 405, ""),
        ]  # fmt: skip
        for request, status, needle in cases:
            assert_json_error(await request, status, needle)


async def test_intervention_over_http(settings: Settings, reader: SagaReader) -> None:
    """POST .../resume and .../skip-compensation act on a saga in needs_intervention; a
    command that cannot apply is a 409 with the reason."""
    broken = {"on": True}

    def behaviour(cmd: SagaCommand) -> Answer:
        if cmd.step == "create_shipment" and not cmd.compensation:
            return "fail"
        if cmd.compensation and broken["on"]:
            return "fail"
        return "ok"

    port = free_port()
    async with (
        ScriptedParticipant(settings, behaviour),
        running(settings, http_port=port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        await http.post("/api/orders", json={**ORDER, "sagaId": "http-int-1"})

        async def needs_person() -> bool:
            return await reader.state("http-int-1") == "needs_intervention"

        await wait_for(needs_person, 60, "needs_intervention")
        abort = await http.post("/api/sagas/http-int-1/abort")
        no_reason = await http.post(
            "/api/sagas/http-int-1/skip-compensation", json={"step": "process_payment"}
        )
        skip = await http.post(
            "/api/sagas/http-int-1/skip-compensation",
            json={"step": "process_payment", "reason": "refunded by hand", "operator": "bob"},
        )
        assert skip.status_code == 202, skip.text

        async def next_one_stuck() -> bool:
            f = await reader.fields("http-int-1")
            return f.get("step.reserve_inventory.status") == "compensation_failed"

        await wait_for(next_one_stuck, 60, "the next compensation to fail too")
        broken["on"] = False
        resume = await http.post("/api/sagas/http-int-1/resume", json={"reason": "fixed"})
        assert resume.status_code == 202

        async def failed() -> bool:
            return await reader.state("http-int-1") == "failed"

        await wait_for(failed, 60, "the compensation to finish")
        final = await http.post("/api/sagas/http-int-1/retry")
    assert_json_error(abort, 409, "abort applies")
    assert_json_error(no_reason, 400, "reason")
    assert_json_error(final, 409, "final")
    f = await reader.fields("http-int-1")
    assert f["step.process_payment.status"] == "compensation_skipped"
    assert f["step.reserve_inventory.status"] == "compensated"
    notes = [h["note"] for h in await reader.history("http-int-1")]
    # without tokens the body names the operator, "http" when it does not
    assert any("skip_compensation process_payment by bob" in n for n in notes), notes
    assert any("operator resume by http" in n for n in notes), notes


async def _no_lag() -> dict[tuple[str, int], int]:
    return {}


class _Broken:
    async def ping(self) -> bool:
        raise ConnectionError("redis is down")

    def pipeline(self, **_: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")


@contextlib.asynccontextmanager
async def api_alone(
    settings: Settings, sagas: SagaModules | None = None, redis: Any = None, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP API without a daemon (no partitions), and a client for it."""
    port = free_port()
    daemon: Any = SimpleNamespace(
        partitions=list, consumer_lag=_no_lag, problems=list, metrics=Metrics()
    )
    s = orchestrator_settings(settings, http_port=port, **overrides)
    api = HttpApi(s, sagas or SagaModules(), daemon, redis=redis)
    await api.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        await api.stop()


async def test_not_ready_and_internal_errors_without_internals(settings: Settings) -> None:
    """Without partitions or Redis, /readyz is 503; an unexpected exception is a JSON 500 that
    shows no internals, and /metrics still answers (redis_up 0)."""
    async with api_alone(settings, redis=_Broken()) as http:
        ready = await http.get("/readyz")
        boom = await http.get("/api/sagas/some-saga")
        metrics = await http.get("/metrics")
    assert ready.status_code == 503
    assert set(ready.json()["problems"]) == {"no partitions assigned", "redis does not answer"}
    assert_json_error(boom, 500, "internal error")
    assert "passwd" not in boom.text
    assert metrics.status_code == 200 and metric(metrics.text, "saga_redis_up") == 0
