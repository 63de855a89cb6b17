"""Schema Registry glue: confluent-kafka's `SchemaRegistryClient`, subjects, registration.

Subjects follow Confluent's **RecordNameStrategy**: the subject of a message is its fully qualified
record name, e.g. `saga.messages.StartOrder`. Several message types share a topic
(`saga-commands` carries StartOrder and SagaCommand; `saga-events` carries replies, timers and
operator commands), and `codec.encode` does not know the topic, so one subject per record type
is the natural fit: each message type evolves on its own, under the subject's compatibility level
(`saga schemas register` sets BACKWARD_TRANSITIVE unless told otherwise). Producers using
confluent-kafka's AvroSerializer interoperate with
`{"subject.name.strategy": record_subject_name_strategy}`.

The registry is only called from `registry_table` (at start-up, via `avro.prepare`), from
`register_all` (the CLI) and from `SchemaTable.fetch` (an unknown id, run in a thread).

`FakeRegistry` (in `schemas.fake_registry`, re-exported here) serves the handful of REST endpoints
this module uses on 127.0.0.1, for tests and for trying registry mode without a real registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.fake_registry import FakeRegistry
from schemas.framing import SchemaTable
from schemas.schema_files import (
    NAMESPACE,
    SchemaFileError,
    SchemaSet,
    default_schema_set,
    parse_text,
)
from schemas.wire import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = [
    "COMPATIBILITY_LEVELS",
    "FakeRegistry",
    "Registered",
    "RegistryError",
    "RegistryUnavailableError",
    "describe_error",
    "make_client",
    "register_all",
    "registry_table",
    "subject_for",
]

log = logging.getLogger(__name__)

COMPATIBILITY_LEVELS = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)


class RegistryError(RuntimeError):
    """The registry could not be used; the message is one line a person can act on."""


class RegistryUnavailableError(RegistryError, ConnectionError):
    """The registry could not be asked (unreachable, timed out, an error status other than
    404): an outage, so the record waiting for it is retried, never dead-lettered. A
    `ConnectionError`, so `infra.errors.is_transient` (the loops' retry) waits it out."""


def subject_for(message_type: str) -> str:
    """RecordNameStrategy: the fully qualified record name."""
    return f"{NAMESPACE}.{message_type}"


def make_client(url: str, *, timeout_s: float = 5.0, max_retries: int = 2) -> SchemaRegistryClient:
    """A client with short, bounded retries (it is only used at start-up and by the CLI)."""
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:  # the [schemaregistry] extra brings authlib, httpx, cachetools
        raise RegistryError(
            f"confluent-kafka's schema registry support is not installed ({exc}); "
            "install confluent-kafka[schemaregistry]"
        ) from None
    try:
        return SchemaRegistryClient(
            {
                "url": url,
                "timeout": timeout_s,
                "max.retries": max_retries,
                "retries.wait.ms": 100,
                "retries.max.wait.ms": 1000,
            }
        )
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"schema registry URL {url!r} is not usable: {exc}") from None


def describe_error(url: str, exc: BaseException) -> str:
    """One line for a failed registry call."""
    status = getattr(exc, "http_status_code", None)
    if status is not None:
        code = getattr(exc, "error_code", None)
        message = getattr(exc, "error_message", None) or str(exc)
        return f"schema registry at {url} answered HTTP {status} (error {code}): {message}"[:500]
    text = str(exc) or type(exc).__name__
    return f"schema registry at {url} unreachable: {type(exc).__name__}: {text}"[:500]


def _base_url(client: SchemaRegistryClient) -> str:
    conf = getattr(client, "_conf", None)
    return str(conf.get("url", "?")) if isinstance(conf, dict) else "?"


def registry_table(
    client: SchemaRegistryClient,
    schema_set: SchemaSet | None = None,
    *,
    auto_register: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> SchemaTable:
    """Ids for writing (register or look up each current schema) and every version the registry
    holds for our subjects (for reading), plus the local ids. All network I/O happens here."""
    from confluent_kafka.schema_registry import Schema

    ss = schema_set or default_schema_set()
    table = SchemaTable(ss, "registry", max_bytes)
    url = _base_url(client)
    try:
        for name, sf in ss.current.items():
            subject = subject_for(name)
            # stripped as confluent-kafka's AvroSerializer strips what it looks up: a registry
            # that matches by exact text (Apicurio) then finds our schema for its producers too
            schema = Schema(sf.text.strip(), "AVRO")
            if auto_register:
                schema_id = client.register_schema(subject, schema)
            else:
                schema_id = _required_id(client.lookup_schema(subject, schema).schema_id, subject)
            table.set_writer(name, schema_id)
            for version in client.get_versions(subject):
                registered = client.get_version(subject, version)
                if registered.schema_id is None or registered.schema_id in table.readers:
                    continue
                _add_registered(table, int(registered.schema_id), registered.schema.schema_str)
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(describe_error(url, exc)) from None
    table.add_local_ids()
    table.fetcher = lambda schema_id: _fetch(client, schema_id)
    return table


def _required_id(schema_id: int | None, subject: str) -> int:
    if schema_id is None:
        raise RegistryError(f"{subject}: the registry returned no schema id")
    return int(schema_id)


def _add_registered(table: SchemaTable, schema_id: int, text: str | None) -> None:
    try:
        _, parsed = parse_text(text or "", f"schema id {schema_id}")
    except SchemaFileError as exc:
        log.warning("skipping registry schema %d: %s", schema_id, exc)
        return
    table.add_reader(schema_id, parsed)


def _fetch(client: SchemaRegistryClient, schema_id: int) -> str | None:
    """The schema text for an id; None if the registry does not know it (404). Anything else
    raises RegistryUnavailableError (an outage: retry, do not dead-letter)."""
    try:
        return client.get_schema(schema_id).schema_str
    except Exception as exc:
        if getattr(exc, "http_status_code", None) == 404:
            return None
        raise RegistryUnavailableError(describe_error(_base_url(client), exc)) from None


@dataclass(frozen=True)
class Registered:
    subject: str
    schema_id: int


def register_all(
    url: str,
    *,
    compatibility: str | None = "BACKWARD_TRANSITIVE",
    schema_set: SchemaSet | None = None,
    timeout_s: float = 5.0,
) -> list[Registered]:
    """Register the current schema of every message type (what `saga schemas register` does).

    With `compatibility`, each subject's level is set first, so the registry itself refuses an
    incompatible schema. Older versions in history/ are not registered: a registry only ever
    holds what producers wrote, and registering an old version after a newer one would make it
    the subject's latest.
    """
    from confluent_kafka.schema_registry import Schema

    if compatibility is not None and compatibility.upper() not in COMPATIBILITY_LEVELS:
        levels = ", ".join(COMPATIBILITY_LEVELS)
        raise RegistryError(f"unknown compatibility level {compatibility!r}; use one of {levels}")
    ss = schema_set or default_schema_set()
    client = make_client(url, timeout_s=timeout_s)
    out = []
    try:
        for name, sf in sorted(ss.current.items()):
            subject = subject_for(name)
            if compatibility is not None:
                client.set_compatibility(subject, compatibility.upper())
            out.append(
                Registered(
                    subject, int(client.register_schema(subject, Schema(sf.text.strip(), "AVRO")))
                )
            )
    except Exception as exc:
        raise RegistryError(describe_error(url, exc)) from None
    finally:
        client.close()
    return out
