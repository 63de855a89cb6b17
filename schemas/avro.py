"""Avro in the Confluent wire format, with or without a Schema Registry: the face of the Avro
modules, and `prepare()`, which builds the schema table at start-up.

Every record is framed the Confluent way: magic byte 0, a 4-byte big-endian schema id, then the
Avro binary body. Where the id comes from:

* **Registry mode** (`Settings.schema_registry_url` set): `prepare(settings)` registers (or looks
  up) the current schema of every message under its record-name subject (`saga.messages.StartOrder`,
  see `schemas.registry`) and prefetches every version the registry holds for those subjects. The
  ids are cached in a `SchemaTable`; encode and decode never call the registry afterwards. A
  consumer calls `fetch_unknown_schemas` on a batch before decoding it: the ids first seen after
  start-up are looked up once each, in a thread.
* **Registry-less mode**: the same framing with *local ids* derived from the schema files (see
  `schemas.schema_files`).

Where things live: `schemas.schema_files` (the `.avsc` files), `schemas.framing` (the
`SchemaTable`, encode and decode), `schemas.contract` (the checks behind `saga schemas check`),
`schemas.registry` (the registry client). Their public names are re-exported here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

from schemas.contract import (
    ContractReport,
    backward_problems,
    check_contract,
    read_with,
    record_drift,
    sample_datum,
)
from schemas.framing import (
    HEADER_SIZE,
    MAGIC,
    SchemaTable,
    UnknownSchemaError,
    active,
    decode_wire,
    encode_wire,
    fetch_schema,
    from_record,
    header,
    schema_to_fetch,
    to_record,
    use,
)
from schemas.registry import RegistryUnavailableError, make_client, registry_table
from schemas.schema_files import (
    HISTORY_DIR_NAME,
    JSON_FIELD_MARK,
    LOCAL_ID_BASE,
    NAMESPACE,
    SCHEMA_DIR,
    SchemaFile,
    SchemaFileError,
    SchemaSet,
    default_schema_set,
    load_schema_set,
    local_id,
    parse_text,
)
from schemas.wire import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from schemas.config import Settings

__all__ = [
    "HEADER_SIZE",
    "HISTORY_DIR_NAME",
    "JSON_FIELD_MARK",
    "LOCAL_ID_BASE",
    "MAGIC",
    "NAMESPACE",
    "SCHEMA_DIR",
    "ContractReport",
    "RegistryUnavailableError",
    "Retry",
    "SchemaFile",
    "SchemaFileError",
    "SchemaSet",
    "SchemaTable",
    "UnknownSchemaError",
    "active",
    "backward_problems",
    "check_contract",
    "decode_wire",
    "default_schema_set",
    "encode_wire",
    "fetch_schema",
    "fetch_unknown_schemas",
    "from_record",
    "header",
    "load_schema_set",
    "local_id",
    "parse_text",
    "prepare",
    "read_with",
    "record_drift",
    "sample_datum",
    "schema_to_fetch",
    "to_record",
    "use",
]


def prepare(settings: Settings | None = None, *, auto_register: bool = True) -> SchemaTable:
    """Build and install the schema table at start-up. Blocking: call it before the event loop
    starts, or in a thread. With a registry URL it registers (auto_register) or looks up each
    current schema and prefetches every version of each subject; raises
    `schemas.registry.RegistryError` with a one-line reason when the registry cannot be used.
    """
    if settings is None or not settings.schema_registry_url:
        max_bytes = settings.max_message_bytes if settings is not None else DEFAULT_MAX_BYTES
        return use(SchemaTable.local(max_bytes=max_bytes))
    client = make_client(settings.schema_registry_url, timeout_s=settings.connect_timeout_s)
    table = registry_table(
        client, auto_register=auto_register, max_bytes=settings.max_message_bytes
    )
    return use(table)


#: how a consumer waits out an outage: `retry(what, op)` runs `op` until it succeeds
Retry = Callable[[str, Callable[[], Awaitable[bool]]], Awaitable[bool]]


async def fetch_unknown_schemas(values: Iterable[bytes | None], retry: Retry) -> None:
    """Registry mode: ask the registry, once each and in a thread, about the schema ids these
    record values name that this process does not know yet; then `codec.decode` reads them, or
    says the registry has no such schema (poison). `RegistryUnavailableError` (a
    `ConnectionError`) is the caller's `retry` to wait out: the batch waits, nothing is
    dead-lettered. Without a registry, or with every id known, it does nothing."""
    for schema_id in sorted({i for v in values if (i := schema_to_fetch(v)) is not None}):
        what = f"fetch schema id {schema_id} from the registry"
        await retry(what, partial(asyncio.to_thread, fetch_schema, schema_id))
