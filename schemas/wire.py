"""What every layer of the codec shares: the input formats, the size cap and the decode error.

The codec modules form a line: each imports only modules above it in this list
(tests/test_schema_layering.py keeps the import graph acyclic):

1. `messages`       the models
2. `wire`           this module
3. `schema_files`   the `.avsc` files: loading, parsing, local schema ids
4. `framing`        the Confluent framing and the `SchemaTable` (Avro encode and decode)
5. `contract`       what `saga schemas check` verifies: drift, backward compatibility
6. `fake_registry`  a registry subset over HTTP, for tests and offline demos
7. `registry`       the Schema Registry client
8. `avro`           the face of 3 to 7, and `prepare()`: the schema table at start-up
9. `codec`          bytes <-> messages: JSON, or Avro through `framing`
"""

from __future__ import annotations

from typing import Literal

DEFAULT_MAX_BYTES = 1_000_000
Format = Literal["json", "avro"]


class DecodeError(ValueError):
    """A record that can never be processed. `kind` goes into the dead-letter reason header."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
