"""The relay never ends but on a stop: one timer or outbox entry that cannot be sent or parsed
backs off on its own while the others go on; an unexpected error restarts the round after a
backoff; a relay that makes no progress shows in /readyz."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from infra import redis as redis_factory
from infra.kafka import MAX_REQUEST_BYTES
from orchestrator.engine.keys import Keys
from orchestrator.engine.ownership import Ownership
from orchestrator.engine.relay import Relay
from schemas import codec
from schemas.config import Settings
from schemas.dlq import H_ERROR_CLASS, H_SOURCE, H_TRUNCATED, header
from schemas.messages import SagaCommand
from tests.support.kafka import produce, read_all, wait_for
from tests.support.orch import SagaReader, running
from tests.support.scripted import Answer, ScriptedParticipant
from tests.test_engine_redis_faults import free_port
from tests.test_orchestrator_e2e import start_order


def command(saga_id: str, n: int) -> tuple[dict[str, bytes], str]:
    """An outbox entry as step.lua writes it, and its command id."""
    cid = f"{saga_id}:reserve_inventory:action:{n}"
    msg = SagaCommand(
        message_id=cid,
        saga_id=saga_id,
        saga_type="order_fulfillment",
        participant="inventory",
        command_type="ReserveItems",
        step="reserve_inventory",
        attempt=n,
    )
    headers = [["saga-message-type", "SagaCommand"], ["saga-message-id", cid]]
    return {"k": saga_id.encode(), "v": codec.encode(msg), "h": orjson.dumps(headers)}, cid


def outbox_of(settings: Settings, saga_id: str) -> str:
    """The outbox of the partition the saga's records go to (its relay's)."""
    keys = Keys.of(settings)
    return keys.outbox_of(keys.partition(saga_id))


async def published_ids(settings: Settings, expect: int) -> set[str]:
    records = await read_all(settings, settings.commands_topic, expect=expect, timeout_s=30)
    return {header(r.headers, "saga-message-id") or "" for r in records}


async def test_a_malformed_outbox_entry_backs_off_alone(settings: Settings) -> None:
    """Outbox entries the relay cannot parse (a field missing, headers not JSON) are retried on
    their own growing backoff, not every round; the valid entries behind them are published,
    and the relay keeps going (/readyz stays ready)."""
    outbox = outbox_of(settings, "relay-ok")
    redis = redis_factory.client(settings)
    await redis.xadd(outbox, {"k": b"no-value"})
    await redis.xadd(outbox, {"k": b"bad-headers", "v": b"{}", "h": b"not json"})
    ids = []
    for n in range(1, 4):
        fields, cid = command("relay-ok", n)
        await redis.xadd(outbox, fields)  # type: ignore[arg-type]
        ids.append(cid)
    port = free_port()
    try:
        async with (
            running(settings, outbox_sweep_age_s=0.2, http_port=port) as orch,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        ):
            assert orch.relay is not None
            relay = orch.relay

            async def valid_ones_out() -> bool:
                return int(await redis.xlen(outbox)) == 2

            await wait_for(valid_ones_out, 30, "the relay to publish the valid entries")
            start = relay.rounds

            async def many_rounds() -> bool:
                return relay.rounds >= start + 40  # 40 rounds of 50 ms: about 2 s

            await wait_for(many_rounds, 30, "the relay to run 40 more rounds")
            failures = orch.metrics.relay_entry_errors
            # 0.5 s, 1 s, 2 s...: at most a handful of tries each, not one per round
            assert 2 <= failures <= 2 * 5, failures
            assert (await http.get("/readyz")).status_code == 200
            assert int(await redis.xlen(outbox)) == 2  # kept, still retried
        assert await published_ids(settings, expect=3) == set(ids)
    finally:
        await redis.aclose()


async def test_a_command_too_large_for_kafka_is_dead_lettered_and_dropped(
    settings: Settings,
) -> None:
    """An outbox entry Kafka can never take (larger than any request) goes to the DLQ (its
    head, with the reason) and leaves the outbox; the entries behind it are published."""
    outbox = outbox_of(settings, "relay-ok")
    redis = redis_factory.client(settings)
    big, big_id = command("relay-big", 1)
    big["v"] = big["v"] + b" " * (MAX_REQUEST_BYTES + 1)
    await redis.xadd(outbox, big)  # type: ignore[arg-type]
    ids = []
    for n in range(1, 4):
        fields, cid = command("relay-ok", n)
        await redis.xadd(outbox, fields)  # type: ignore[arg-type]
        ids.append(cid)
    try:
        async with running(settings, outbox_sweep_age_s=0.2):

            async def drained() -> bool:
                return int(await redis.xlen(outbox)) == 0

            await wait_for(drained, 30, "the relay to empty the outbox")
        assert await published_ids(settings, expect=3) == set(ids)
        [dead] = await read_all(settings, settings.dlq_topic, expect=1)
        assert header(dead.headers, "saga-message-id") == big_id
        assert header(dead.headers, H_ERROR_CLASS) == "MSG_SIZE_TOO_LARGE"
        assert header(dead.headers, H_SOURCE) == "relay"
        assert header(dead.headers, H_TRUNCATED) == str(len(big["v"]))
    finally:
        await redis.aclose()


async def test_a_timer_that_cannot_be_sent_is_postponed_alone(
    settings: Settings, reader: SagaReader
) -> None:
    """A due timer that cannot become a record (a saga id the wire refuses) is moved later in
    the timer set on its own backoff; the timers that make sagas progress still fire."""
    keys = Keys.of(settings)
    timers = keys.timers_of(keys.partition("not a saga id!"))
    redis = redis_factory.client(settings)
    bad = "not a saga id!|timeout|reserve_inventory|1|a"
    await redis.zadd(timers, {bad: 1})
    seen: set[str] = set()

    def silent_once(cmd: SagaCommand) -> Answer:  # the first attempt needs its timeout to fire
        first = cmd.saga_id not in seen
        seen.add(cmd.saga_id)
        return "silent" if first else "ok"

    ids = [f"timer-{i}" for i in range(3)]
    try:
        async with ScriptedParticipant(settings, silent_once), running(settings) as orch:
            await produce(
                settings, settings.commands_topic, [(s.encode(), start_order(s)) for s in ids]
            )
            states = await reader.wait_final(ids, timeout_s=60)
            assert set(states.values()) == {"completed"}
            assert orch.metrics.relay_entry_errors >= 1
            score = await redis.zscore(timers, bad)
            assert score is not None and score > 1000  # postponed, not dropped or spinning
    finally:
        await redis.aclose()


async def test_an_unexpected_error_restarts_the_relay_after_a_backoff(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug that raises inside a relay round is logged with its traceback and the round runs
    again after a backoff: the relay does not end, and goes on re-publishing."""
    outbox = outbox_of(settings, "restart-1")
    redis = redis_factory.client(settings)
    fields, cid = command("restart-1", 1)
    await redis.xadd(outbox, fields)  # type: ignore[arg-type]
    failures = {"left": 3}
    real = Ownership.take_pending

    async def flaky(self: Ownership) -> None:  # once a round
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("a bug in a relay round")
        await real(self)

    monkeypatch.setattr(Ownership, "take_pending", flaky)
    caplog.set_level(logging.ERROR, logger="orchestrator.engine.relay")
    try:
        async with running(settings, outbox_sweep_age_s=0.2) as orch:

            async def drained() -> bool:
                return int(await redis.xlen(outbox)) == 0

            await wait_for(drained, 30, "the restarted relay to empty the outbox")
            assert orch.metrics.relay_restarts == 3
        assert await published_ids(settings, expect=1) == {cid}
        logged = [r for r in caplog.records if "unexpected error" in r.getMessage()]
        assert len(logged) == 3 and all(r.exc_info for r in logged)
    finally:
        await redis.aclose()


async def test_a_stalled_relay_makes_readyz_fail(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay whose rounds keep failing is "stalled" in /readyz (503) once `relay_stalled_s`
    passed without a finished round; ready again when its rounds finish."""
    broken = {"on": True}
    real: Callable[[Relay], Awaitable[bool]] = Relay.round

    async def failing(self: Relay) -> Any:
        if broken["on"]:
            raise RuntimeError("relay round cannot finish")
        return await real(self)

    monkeypatch.setattr(Relay, "round", failing)
    port = free_port()
    async with (
        running(settings, http_port=port, relay_stalled_s=2.0, infra_backoff_max_s=0.2),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        body: dict[str, Any] = {}

        async def stalled() -> bool:
            r = await http.get("/readyz")
            body.update(r.json())
            return r.status_code == 503 and any(
                p.startswith("relay stalled for ") for p in body.get("problems", [])
            )

        await wait_for(stalled, 30, "/readyz to report the stalled relay", interval_s=0.1)
        assert any("relay round cannot finish" in p for p in body["problems"]), body
        broken["on"] = False

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await wait_for(ready, 30, "/readyz to be ready once the relay ticks again")
