"""The reference document's own lines, as written, against the real Kafka and Redis:

    curl -X POST http://localhost:8001/api/test/fail-next-request
    curl -X POST http://localhost:8000/api/orders -H "Content-Type: application/json" \\
      -d '{"items":[{"productId":"123","quantity":2}]}'
    curl http://localhost:8000/api/sagas/order-123/status

with the four sample workers run by `saga participant run all` (a real process, its
fail-next-request endpoints on their own ports), and a duplicate `POST /api/orders` (409)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra import redis as redis_factory
from orchestrator.engine.keys import Keys
from participants.keys import SdkKeys
from participants.samples.faults import inject
from participants.samples.faults.http import serving
from participants.samples.order.workers import snapshot
from participants.testing import TopicReader
from schemas.config import Settings
from schemas.messages import StartOrder
from tests.conftest import ORDER_TOPICS
from tests.support.kafka import wait_for
from tests.support.orch import SagaReader, running
from tests.support.procs import ROOT, orchestrator_env
from tests.test_http import free_port
from tests.test_ops_cli_e2e import cli

# the workers' command topics exist before they start, as in a deployment
pytestmark = ORDER_TOPICS

MINIMAL = {"items": [{"productId": "123", "quantity": 2}]}


def free_ports(n: int) -> int:
    """A base port with the n ports from it free (`run all` listens on base..base+n-1)."""
    for _ in range(50):
        base = free_port()
        if base + n > 65_535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + n):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise AssertionError(f"no {n} consecutive free ports")


@contextlib.contextmanager
def workers_process(settings: Settings, http_port: int, log: Path) -> Iterator[None]:
    """`saga participant run all` with SAGA_PARTICIPANT_HTTP_PORT set, stopped by SIGTERM."""
    env = orchestrator_env(settings, SAGA_PARTICIPANT_HTTP_PORT=str(http_port))
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.ops.cli", "participant", "run", "all"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The orchestrator with its HTTP API, in this event loop."""
    port = free_port()
    async with (
        running(settings, http_port=port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        yield http


async def answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(url)
        return True
    except httpx.TransportError:
        return False


async def test_minimal_order_completes_and_fail_next_request_compensates_the_next(
    settings: Settings, reader: SagaReader, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """`{"items": [...]}` alone is accepted (202), priced from the inventory's unit price,
    without a customer, and completes; then the payment worker's fail-next-request makes the
    next order fail non-retryably there and compensate, and the one after completes again."""
    seeded = await cli(settings, "inventory", "set-stock", "123", "10", "--price", "21.25")
    assert seeded.code == 0, seeded.err
    base = free_ports(4)  # payment, inventory, shipping, notification
    with workers_process(settings, base, tmp_path / "workers.log"):
        payment_url = f"http://127.0.0.1:{base}"  # the reference document's 8001
        for port in range(base, base + 4):
            url = f"http://127.0.0.1:{port}"
            await wait_for(lambda url=url: answers(url), 60, f"{url} answering")

        first = await api.post("/api/orders", json=MINIMAL)
        assert first.status_code == 202, first.text
        ok = first.json()["sagaId"]
        assert first.json()["status"] == f"/api/sagas/{ok}/status"
        assert (await reader.wait_final([ok]))[ok] == "completed"

        async with httpx.AsyncClient(base_url=payment_url, timeout=10) as payment:
            armed = await payment.post("/api/test/fail-next-request")
        assert armed.status_code == 200, armed.text
        assert armed.json() == {"participant": "payment", "failNext": 1, "retryable": False}

        second = await api.post("/api/orders", json=MINIMAL)
        assert second.status_code == 202, second.text
        failed = second.json()["sagaId"]
        assert (await reader.wait_final([failed]))[failed] == "failed"

        third = await api.post("/api/orders", json=MINIMAL)
        after = third.json()["sagaId"]
        assert (await reader.wait_final([after]))[after] == "completed"

        status = (await api.get(f"/api/sagas/{failed}/status")).json()

    steps = {s["name"]: s for s in status["steps"]}
    assert steps["process_payment"]["status"] == "failed"
    assert "injected failure (fail-next)" in steps["process_payment"]["error"]
    assert steps["reserve_inventory"]["status"] == "compensated"
    ledgers = await snapshot(settings)
    assert ledgers.stock["123"] == 10 - 2 * 2 and ledgers.total_units("123") == 10
    assert ledgers.charges[ok]["amount"] == "42.50" and ledgers.charges[ok]["customerId"] == ""
    assert failed not in ledgers.charges
    data = (await api.get(f"/api/sagas/{ok}")).json()["data"]
    assert '"amount":"42.50"' in data.replace(" ", "") and '"customerId":null' in data


async def test_an_order_without_amount_needs_prices(
    settings: Settings, api: httpx.AsyncClient
) -> None:
    """A product without a price: 400 naming it (nothing produced); an amount given is kept."""
    await cli(settings, "inventory", "set-stock", "priced", "5", "--price", "3")
    body = {"items": [{"productId": "priced", "quantity": 1}, {"productId": "free", "quantity": 1}]}
    r = await api.post("/api/orders", json=body)
    assert r.status_code == 400 and "no price is set for free" in r.json()["error"], r.text
    assert "--price" in r.json()["error"]
    given = await api.post("/api/orders", json={**body, "amount": "1.00"})
    assert given.status_code == 202
    async with redis_factory.connected(settings, decode=True) as redis:  # a price set by hand
        await redis.hset(f"{settings.key_prefix}:inventory:prices", "free", "about ten")
    r = await api.post("/api/orders", json=body)
    assert r.status_code == 400 and "no price is set for free" in r.json()["error"], r.text


async def test_fail_next_request_arms_the_workers_faults(settings: Settings) -> None:
    """The endpoint writes the same faults hash as `saga participant fail-next NAME
    --non-retryable` (`?count=N` for more than one); a bad count is a 400 that writes nothing."""
    port = free_port()
    keys = SdkKeys(settings.key_prefix, "shipping")
    async with (
        serving(settings, "shipping", "127.0.0.1", port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
        redis_factory.connected(settings, decode=True) as redis,
    ):
        bad = await http.post("/api/test/fail-next-request", params={"count": "many"})
        assert bad.status_code == 400 and await inject.show(redis, keys) == {}
        ok = await http.post("/api/test/fail-next-request", params={"count": "2"})
        assert ok.json() == {"participant": "shipping", "failNext": 2, "retryable": False}
        faults = await inject.show(redis, keys)
        assert faults["fail_next"] == "2" and faults["fail_next_retryable"] == "0"
        assert (await http.get("/api/test/fail-next-request")).status_code == 405


async def test_cli_start_order_prices_the_order_too(settings: Settings) -> None:
    """`saga start-order --item SKU:N` without --amount and without --customer: priced from the
    inventory (3 x 1.10), produced as a StartOrder with no customer."""
    await cli(settings, "inventory", "set-stock", "sku-p", "5", "--price", "1.10")
    async with TopicReader(settings, settings.commands_topic) as topic:
        started = await cli(settings, "start-order", "--item", "sku-p:3", "--json")
        sid = started.json()["sagaId"]
        seen = await topic.until(lambda s: any(getattr(r.message, "saga_id", 0) == sid for r in s))
    (msg,) = [r.message for r in seen if isinstance(r.message, StartOrder)]
    assert msg.amount == Decimal("3.30")
    assert msg.customer_id is None
    unpriced = await cli(settings, "start-order", "--item", "nothing-here:1")
    assert unpriced.code == 2 and "no price is set for nothing-here" in unpriced.err


async def test_a_duplicate_order_is_a_409_with_the_status_link(
    settings: Settings, reader: SagaReader, api: httpx.AsyncClient
) -> None:
    """POST /api/orders for a saga id that exists answers 409 with the existing saga's status
    link and produces nothing; the first POST of a new id is a 202."""
    order: dict[str, Any] = {
        "sagaId": "order-123",
        "customerId": "c-1",
        "amount": "42.50",
        **MINIMAL,
    }
    async with TopicReader(settings, settings.commands_topic) as topic:
        first = await api.post("/api/orders", json=order)
        assert first.status_code == 202, first.text
        await wait_for(lambda: reader.state("order-123"), 30, "the saga started")

        again = await api.post("/api/orders", json={**order, "amount": "1.00"})
        assert again.status_code == 409, again.text
        assert again.json() == {
            "error": "saga order-123 already exists",
            "status": "/api/sagas/order-123/status",
        }
        assert (await api.get(again.json()["status"])).status_code == 200

        # a sentinel produced after the 409: every StartOrder before it has been read
        sentinel = (await api.post("/api/orders", json={**order, "sagaId": "order-124"})).json()
        await topic.until(
            lambda s: any(getattr(r.message, "saga_id", "") == sentinel["sagaId"] for r in s)
        )
    starts = [r.message for r in topic.seen if isinstance(r.message, StartOrder)]
    assert [m.saga_id for m in starts].count("order-123") == 1


async def test_an_expired_sagas_id_is_a_409_too(settings: Settings, api: httpx.AsyncClient) -> None:
    """A saga that ran and expired leaves a tombstone: POST /api/orders with its id is a 409."""
    keys = Keys(settings.key_prefix)
    async with redis_factory.connected(settings) as redis:
        await redis.set(keys.tombstone("order-gone"), "1", ex=60)
    order = {"sagaId": "order-gone", "customerId": "c-1", "amount": "1.00", **MINIMAL}
    again = await api.post("/api/orders", json=order)
    assert again.status_code == 409 and "has expired" in again.json()["error"], again.text
