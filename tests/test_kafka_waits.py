"""The Kafka waits are settings: SAGA_KAFKA_LINGER_MS and SAGA_KAFKA_FETCH_MAX_WAIT_MS reach
every aiokafka client the factory builds (a caller's own override still wins), default to what
keeps one saga on an idle stack from waiting, and a bad value is one clear error.

No time is asserted: docs/PERFORMANCE.md ("Latency") has the measurements behind the defaults.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra import kafka
from schemas.config import Settings


async def test_waits_reach_the_producer_and_the_consumer() -> None:
    """The settings become aiokafka's `linger_ms` and `fetch_max_wait_ms` (read back from the
    clients' own attributes); a caller's explicit option wins over the setting."""
    s = Settings(kafka_linger_ms=7, kafka_fetch_max_wait_ms=123)
    producer = kafka.producer(s)
    consumer = kafka.consumer(s, "t", group_id=None)
    own = kafka.consumer(s, "t", group_id=None, fetch_max_wait_ms=50)
    try:
        assert producer._message_accumulator._linger_time == pytest.approx(0.007)
        assert consumer._fetch_max_wait_ms == 123
        assert own._fetch_max_wait_ms == 50
    finally:
        for client in (producer, consumer, own):
            await client.stop()


def test_waits_reach_the_hot_path_clients() -> None:
    """The same settings become librdkafka's `linger.ms` and `fetch.wait.max.ms` on the hot
    path's clients (`rd_producer`, `rd_consumer`), with the options the daemon relies on: an
    idempotent acks=all producer partitioning by murmur2 (the partition a saga's keys are
    filed under, as aiokafka and Java do), manual commits, static membership when set."""
    s = Settings(kafka_linger_ms=7, kafka_fetch_max_wait_ms=123, group_instance_id="orch-0")
    p = kafka.rd_producer(s).conf
    c = kafka.rd_consumer(s, group_id="g", **{"fetch.wait.max.ms": 50}).conf
    assert (p["linger.ms"], p["enable.idempotence"], p["acks"]) == (7, True, "all")
    assert p["partitioner"] == "murmur2_random"
    assert (c["group.id"], c["enable.auto.commit"], c["group.instance.id"]) == (
        "g",
        False,
        "orch-0",
    )
    assert c["fetch.wait.max.ms"] == 50  # the caller's own option wins
    assert kafka.rd_consumer(s, group_id="g").conf["fetch.wait.max.ms"] == 123
    assert "group.instance.id" not in kafka.rd_consumer(Settings(), group_id="g").conf


def test_defaults_do_not_hold_an_idle_saga() -> None:
    """Producers send at once (an idle saga crosses Kafka 9 times: a linger of 2 ms cost about
    20 ms per saga); the fetch wait stays aiokafka's 500 ms (data ends it at once)."""
    s = Settings()
    assert s.kafka_linger_ms == 0
    assert s.kafka_fetch_max_wait_ms == 500


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SAGA_KAFKA_LINGER_MS", "-1", "greater than or equal to 0"),
        ("SAGA_KAFKA_LINGER_MS", "1001", "less than or equal to 1000"),
        ("SAGA_KAFKA_LINGER_MS", "2.5", "valid integer"),
        ("SAGA_KAFKA_LINGER_MS", "soon", "valid integer"),
        ("SAGA_KAFKA_FETCH_MAX_WAIT_MS", "30001", "less than or equal to 30000"),
        ("SAGA_KAFKA_FETCH_MAX_WAIT_MS", "", "valid integer"),
    ],
)
def test_bad_wait_is_one_clear_error(
    name: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait out of range or not a whole number of ms names the setting and the rule."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as err:
        Settings()
    text = str(err.value)
    assert name.removeprefix("SAGA_").lower() in text and says in text, text
