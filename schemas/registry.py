"""Schema Registry glue (confluent-kafka's `SchemaRegistryClient`) and a tiny fake registry.

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

`FakeRegistry` implements the handful of REST endpoints this module uses on 127.0.0.1, for tests
and for trying registry mode without a real registry. It is not a registry.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from schemas.avro import (
    NAMESPACE,
    SchemaFileError,
    SchemaSet,
    SchemaTable,
    backward_problems,
    default_schema_set,
    parse_text,
)
from schemas.codec import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

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
            schema = Schema(sf.text, "AVRO")
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
    """The schema text for an id; None if the registry does not know it. Transport errors raise
    RegistryError (an infrastructure problem: retry, do not dead-letter)."""
    try:
        return client.get_schema(schema_id).schema_str
    except Exception as exc:
        if getattr(exc, "http_status_code", None) == 404:
            return None
        raise RegistryError(describe_error(_base_url(client), exc)) from None


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
                Registered(subject, int(client.register_schema(subject, Schema(sf.text, "AVRO"))))
            )
    except Exception as exc:
        raise RegistryError(describe_error(url, exc)) from None
    finally:
        client.close()
    return out


# --------------------------------------------------------------------------------------------
# A fake registry for tests and offline demos
# --------------------------------------------------------------------------------------------


@dataclass
class _State:
    schemas: dict[int, str] = field(default_factory=dict)  # id -> schema text
    subjects: dict[str, list[int]] = field(default_factory=dict)  # subject -> ids by version
    config: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 1

    def id_for(self, text: str) -> int:
        doc = json.loads(text)
        for schema_id, known in self.schemas.items():
            if json.loads(known) == doc:
                return schema_id
        schema_id, self.next_id = self.next_id, self.next_id + 1
        self.schemas[schema_id] = text
        return schema_id


_VERSION_PATH = re.compile(r"^/subjects/(?P<s>[^/]+)/versions/(?P<v>latest|[0-9]+)$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: int, message: str) -> None:
        self._send(status, {"error_code": code, "message": message})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        doc = json.loads(self.rfile.read(length) or b"{}")
        return doc if isinstance(doc, dict) else {}

    def _route(self, method: str) -> None:
        st = self.server.state
        path = urlsplit(self.path).path
        with st.lock:
            st.requests.append(f"{method} {path}")
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if method == "GET" and parts == ["subjects"]:
                return self._send(200, sorted(st.subjects))
            if method == "GET" and len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
                text = st.schemas.get(int(parts[2])) if parts[2].isdigit() else None
                if text is None:
                    return self._error(404, 40403, "Schema not found")
                return self._send(200, {"schema": text})
            if parts[0] == "config" and len(parts) <= 2:
                key = parts[1] if len(parts) == 2 else ""
                if method == "PUT":
                    level = str(self._body().get("compatibility", "")).upper()
                    st.config[key] = level
                    return self._send(200, {"compatibility": level})
                if method == "GET":
                    return self._send(200, {"compatibilityLevel": st.config.get(key, "BACKWARD")})
            if len(parts) >= 2 and parts[0] == "subjects":
                return self._subject(method, parts[1], parts[2:], st)
        return self._error(404, 404, f"no route for {method} {path}")

    def _subject(self, method: str, subject: str, rest: list[str], st: _State) -> None:
        ids = st.subjects.get(subject)
        if method == "POST" and rest == ["versions"]:
            text = str(self._body().get("schema", ""))
            try:
                _, parsed = parse_text(text, subject)
            except SchemaFileError as exc:
                return self._error(422, 42201, f"Invalid schema: {exc}")
            doc = json.loads(text)
            for schema_id in ids or []:
                if json.loads(st.schemas[schema_id]) == doc:
                    return self._send(200, {"id": schema_id})
            level = st.config.get(subject, st.config.get("", "BACKWARD"))
            if level.startswith(("BACKWARD", "FULL")):
                older = [parse_text(st.schemas[i])[1] for i in (ids or [])]
                problems = _compat(parsed, older if level.endswith("TRANSITIVE") else older[-1:])
                if problems:
                    return self._error(
                        409, 409, f"Schema being registered is incompatible: {problems[0]}"
                    )
            schema_id = st.id_for(text)
            st.subjects.setdefault(subject, []).append(schema_id)
            return self._send(200, {"id": schema_id})
        if ids is None:
            return self._error(404, 40401, f"Subject '{subject}' not found.")
        if method == "POST" and rest == []:
            doc = json.loads(str(self._body().get("schema", "")) or "null")
            for version, schema_id in enumerate(ids, 1):
                if json.loads(st.schemas[schema_id]) == doc:
                    return self._send(200, self._version_doc(subject, version, schema_id, st))
            return self._error(404, 40403, "Schema not found")
        if method == "GET" and rest == ["versions"]:
            return self._send(200, list(range(1, len(ids) + 1)))
        m = _VERSION_PATH.match("/subjects/" + "/".join([subject, *rest]))
        if method == "GET" and m is not None:
            version = len(ids) if m["v"] == "latest" else int(m["v"])
            if not 1 <= version <= len(ids):
                return self._error(404, 40402, f"Version {m['v']} not found.")
            return self._send(200, self._version_doc(subject, version, ids[version - 1], st))
        return self._error(404, 404, "no such subject route")

    @staticmethod
    def _version_doc(subject: str, version: int, schema_id: int, st: _State) -> dict[str, Any]:
        return {
            "subject": subject,
            "version": version,
            "id": schema_id,
            "schema": st.schemas[schema_id],
        }

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")


def _compat(new: dict[str, Any], olders: list[dict[str, Any]]) -> list[str]:
    from schemas.avro import SchemaFile

    files = [SchemaFile("old", i + 1, "", {}, p) for i, p in enumerate(olders)]
    return backward_problems(new, files)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = _State()


class FakeRegistry:
    """A Confluent-compatible registry subset on 127.0.0.1 (register, look up, versions, ids,
    config). Use as a context manager; `url` is its address, `requests` what it was asked."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-registry", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[str]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    @property
    def subjects(self) -> dict[str, list[int]]:
        with self._server.state.lock:
            return {k: list(v) for k, v in self._server.state.subjects.items()}

    def compatibility(self, subject: str) -> str | None:
        with self._server.state.lock:
            return self._server.state.config.get(subject)

    def start(self) -> FakeRegistry:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
