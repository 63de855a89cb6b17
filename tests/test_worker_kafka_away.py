"""A participant worker whose Kafka does not answer when it starts (the workers on librdkafka,
issue 12): it keeps trying to connect, saying so; it takes its commands as soon as Kafka answers;
and a stop while it waits ends it cleanly, having handled nothing.

Kafka's bootstrap address is a TCP proxy whose cable is pulled at first (a connection is closed
as soon as it is accepted). Once connected, the clients talk to the broker's advertised address,
so only the connect goes through the proxy: what these tests cut is the start, not a running
worker's link (a shared broker cannot be stopped under other tests)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from participants.samples.order.workers import payment
from participants.testing import TopicReader, command, order, produce, running
from schemas.config import Settings
from schemas.messages import StepCompleted
from tests.support.kafka import wait_for
from tests.support.proxy import CuttableProxy

pytestmark = pytest.mark.participant_topics("payment")


@pytest.fixture
async def kafka_away(settings: Settings) -> AsyncIterator[tuple[Settings, CuttableProxy]]:
    """Settings whose bootstrap is a proxy in front of the broker, its cable pulled."""
    host, port = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
    proxy = CuttableProxy(host, int(port))
    await proxy.start()
    proxy.cut()
    yield settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{proxy.port}"}), proxy
    await proxy.stop()


def connect_failures(caplog: pytest.LogCaptureFixture) -> int:
    return sum("connect to Kafka failed" in r.getMessage() for r in caplog.records)


async def test_a_worker_takes_commands_once_kafka_answers(
    settings: Settings,
    kafka_away: tuple[Settings, CuttableProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    away, proxy = kafka_away
    caplog.set_level(logging.WARNING)
    charge = command("KA1", "payment", "ProcessPayment", "process_payment", data=order())
    await produce(settings, [charge])
    async with (
        TopicReader(settings, settings.events_topic) as events,
        running(away, payment.build()) as worker,
    ):

        async def retried() -> bool:
            return connect_failures(caplog) >= 1

        # librdkafka gives up a connect after infra.rdkafka.CONNECT_TIMEOUT_S (10 s)
        await wait_for(retried, 90, "the worker to say its connect to Kafka failed")
        assert worker.stats.handled == 0 and worker.stats.replies == 0
        proxy.restore()
        reply = await events.reply(charge.message_id, timeout_s=90)
        assert isinstance(reply, StepCompleted)
        assert worker.stats.handled == 1
        stats = await worker.stop(timeout_s=60)
    assert stats.commits >= 1  # the batch was committed once the reply was acknowledged


async def test_a_stop_while_kafka_is_away_ends_the_worker(
    kafka_away: tuple[Settings, CuttableProxy], caplog: pytest.LogCaptureFixture
) -> None:
    away, _ = kafka_away
    caplog.set_level(logging.WARNING)
    async with running(away, payment.build()) as worker:

        async def retried() -> bool:
            return connect_failures(caplog) >= 1

        await wait_for(retried, 90, "the worker to say its connect to Kafka failed")
        # a stop during a connect attempt is seen when that attempt ends (up to 10 s)
        stats = await worker.stop(timeout_s=60)  # TimeoutError if the retry ignored the stop
    assert stats.handled == 0 and stats.batches == 0
