"""Every Kafka client the project builds comes from here, configured from `Settings`.

The hot path (the daemon's and the workers' consumer and producer) runs on confluent-kafka
(librdkafka, `infra/rdkafka.py`: `rd_producer`, `rd_consumer`); tools, the tracker, the test
harness and the HTTP API use aiokafka (`producer`, `consumer`). Both read the same settings.

The defaults are the project's contract with Kafka, decided once:
- producers are idempotent with acks=all, and can carry any record an input topic accepts on
  to the dead-letter topic (`MAX_REQUEST_BYTES`);
- consumers read raw bytes (a failing deserializer inside aiokafka would loop forever), commit
  by hand after the effects are durable, start from the earliest offset of a new group, and
  notice new topics and partitions within 30 s rather than aiokafka's 5 minutes.
A caller passes only what is its own (a group id, a client id, a batch size).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from infra import rdkafka
from schemas.config import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

#: big enough to dead-letter any record the input topics accept (up to 16 MiB by default)
MAX_REQUEST_BYTES = 17 * 1_048_576
#: notice topics created (or partitions added) after start within this time
METADATA_MAX_AGE_MS = 30_000


class _Startable(Protocol):
    async def start(self) -> Any: ...
    async def stop(self) -> Any: ...


C = TypeVar("C", bound=_Startable)


def client_options(settings: Settings) -> dict[str, Any]:
    """The aiokafka options every client shares: where the brokers are, and how to prove who
    we are (TLS with hostname verification on by default, SASL)."""
    s = settings
    options: dict[str, Any] = {
        "bootstrap_servers": s.kafka_bootstrap_servers,
        "security_protocol": s.kafka_security_protocol,
    }
    if s.kafka_tls:
        context = create_ssl_context(
            cafile=s.kafka_ssl_cafile, certfile=s.kafka_ssl_certfile, keyfile=s.kafka_ssl_keyfile
        )
        context.check_hostname = s.kafka_ssl_check_hostname
        options["ssl_context"] = context
    if s.kafka_security_protocol.startswith("SASL_"):
        assert s.kafka_sasl_password is not None  # the settings validator guarantees it
        options |= {
            "sasl_mechanism": s.kafka_sasl_mechanism,
            "sasl_plain_username": s.kafka_sasl_username,
            "sasl_plain_password": s.kafka_sasl_password.get_secret_value(),
        }
    return options


def librdkafka_options(settings: Settings) -> dict[str, Any]:
    """The same for confluent-kafka (librdkafka) clients."""
    s = settings
    options: dict[str, Any] = {
        "bootstrap.servers": s.kafka_bootstrap_servers,
        "security.protocol": s.kafka_security_protocol.lower(),
    }
    if s.kafka_tls:
        options["ssl.endpoint.identification.algorithm"] = (
            "https" if s.kafka_ssl_check_hostname else "none"
        )
        files = {
            "ssl.ca.location": s.kafka_ssl_cafile,
            "ssl.certificate.location": s.kafka_ssl_certfile,
            "ssl.key.location": s.kafka_ssl_keyfile,
        }
        options |= {k: v for k, v in files.items() if v}
    if s.kafka_security_protocol.startswith("SASL_"):
        assert s.kafka_sasl_password is not None
        options |= {
            "sasl.mechanisms": s.kafka_sasl_mechanism,
            "sasl.username": s.kafka_sasl_username,
            "sasl.password": s.kafka_sasl_password.get_secret_value(),
        }
    return options


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all producer (not started)."""
    options: dict[str, Any] = {
        **client_options(settings),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": settings.kafka_linger_ms,
        "max_request_size": MAX_REQUEST_BYTES,
        "request_timeout_ms": int(settings.connect_timeout_s * 1000) + 30_000,
    }
    return AIOKafkaProducer(**(options | overrides))


def consumer(
    settings: Settings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A raw-bytes consumer with manual commits (not started). `group_id=None` reads without
    a group (assign or subscribe to every partition; nothing is committed)."""
    options: dict[str, Any] = {
        **client_options(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "metadata_max_age_ms": METADATA_MAX_AGE_MS,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "key_deserializer": None,
        "value_deserializer": None,
    }
    return AIOKafkaConsumer(*topics, **(options | overrides))


#: librdkafka's own log lines (broker down, leader moved) go through Python logging
_RDKAFKA_LOG = logging.getLogger("librdkafka")


def rd_producer(settings: Settings, **conf: Any) -> rdkafka.Producer:
    """The hot path's producer (not started): idempotent, acks=all, and partitioning keys as
    Kafka's Java client and aiokafka do (murmur2; librdkafka's default is CRC32), since a
    saga's Redis shard is the partition its records go to (`orchestrator.engine.keys`)."""
    options: dict[str, Any] = {
        **librdkafka_options(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.kafka_linger_ms,
        "message.max.bytes": MAX_REQUEST_BYTES,
        "partitioner": "murmur2_random",
        "message.timeout.ms": int(settings.connect_timeout_s * 1000) + 30_000,
        "socket.nagle.disable": True,  # as the Java client and asyncio's sockets do
        "logger": _RDKAFKA_LOG,
    }
    return rdkafka.Producer(options | conf)


def rd_consumer(settings: Settings, *, group_id: str, **conf: Any) -> rdkafka.Consumer:
    """The hot path's consumer (not started): raw bytes, commits by hand, the earliest offset
    for a new group, new topics and partitions noticed within 30 s. `group.instance.id` (static
    membership) is set when `SAGA_GROUP_INSTANCE_ID` is."""
    options: dict[str, Any] = {
        **librdkafka_options(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "topic.metadata.refresh.interval.ms": METADATA_MAX_AGE_MS,
        "fetch.wait.max.ms": settings.kafka_fetch_max_wait_ms,
        "socket.nagle.disable": True,
        "logger": _RDKAFKA_LOG,
    }
    if settings.group_instance_id:
        options["group.instance.id"] = settings.group_instance_id
    return rdkafka.Consumer(options | conf)


@contextlib.asynccontextmanager
async def started(client: C) -> AsyncIterator[C]:
    """Start an aiokafka client for the block and stop it afterwards, whatever happens."""
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


def admin(settings: Settings, **conf: Any) -> AdminClient:
    """A confluent-kafka admin client (topics, metadata)."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(librdkafka_options(settings) | conf)


def sync_producer(settings: Settings, **conf: Any) -> Producer:
    """A confluent-kafka producer, acks=all (for tools and tests outside an event loop)."""
    from confluent_kafka import Producer

    return Producer(librdkafka_options(settings) | {"acks": "all"} | conf)


def sync_consumer(settings: Settings, group_id: str, **conf: Any) -> Consumer:
    """A confluent-kafka consumer with manual commits, from the earliest offset."""
    from confluent_kafka import Consumer

    options = {"group.id": group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    return Consumer(librdkafka_options(settings) | options | conf)


#: records up to 16 MiB reach the orchestrator, whose own cap (SAGA_MAX_MESSAGE_BYTES, 1 MB)
#: dead-letters them with a reason instead of the broker refusing them at the producer, and
#: the dead-letter topic can hold whatever the input topics accepted.
TOPIC_CONFIG = {"max.message.bytes": str(16 * 1_048_576)}


def create_topics(
    settings: Settings, names: list[str], partitions: int, timeout_s: float = 30.0
) -> list[str]:
    """Create `names` (one replica each, `TOPIC_CONFIG`) and wait until every partition has a
    leader: a consumer that subscribes before that gets no partitions until its next metadata
    refresh. Topics that exist are left as they are. One line of report per topic; raises
    `confluent_kafka.KafkaException` when the cluster refuses."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.cimpl import NewTopic

    client = admin(settings, **{"socket.timeout.ms": int(timeout_s * 1000)})
    existing = client.list_topics(timeout=timeout_s).topics
    lines: list[str] = []
    for name in names:
        if name in existing:
            count = len(existing[name].partitions)
            note = "" if count == partitions else f" (SAGA_TOPIC_PARTITIONS is {partitions})"
            lines.append(f"topic {name}: exists, {count} partitions{note}")
    wanted = [NewTopic(n, num_partitions=partitions, replication_factor=1, config=TOPIC_CONFIG)
              for n in names if n not in existing]  # fmt: skip
    if wanted:
        futures = client.create_topics(
            wanted, operation_timeout=timeout_s, request_timeout=timeout_s
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s * 2)
                lines.append(f"topic {name}: created, {partitions} partitions")
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not (
                    isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS
                ):
                    raise
                lines.append(f"topic {name}: exists")
    _wait_for_leaders(client, names, timeout_s * 2)
    return lines


def _wait_for_leaders(client: AdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topics = client.list_topics(timeout=10).topics
        if all(
            n in topics
            and topics[n].partitions
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.05)  # polling the broker's metadata, bounded by the deadline
    raise TimeoutError(f"topics {names} did not get partition leaders within {timeout_s:g} s")


def delete_topics(settings: Settings, names: list[str], timeout_s: float = 30.0) -> None:
    """Delete topics, waiting for the broker's answer; a topic already gone is fine."""
    client = admin(settings)  # kept alive until the futures resolve
    for future in client.delete_topics(names, operation_timeout=timeout_s).values():
        with contextlib.suppress(Exception):
            future.result(timeout=timeout_s * 2)
