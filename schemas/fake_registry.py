"""A FAKE Schema Registry, hand-written here, for trying registry mode offline; the tests use a
real one (Apicurio Registry, scripts/stack_registry). It serves the handful of Confluent REST
endpoints `schemas.registry` uses (register, look up, versions, ids, config) on 127.0.0.1. It checks
BACKWARD(_TRANSITIVE) compatibility like a registry would, with `schemas.contract`. It is not a
registry: everything lives in memory and ends with it (a `close` then `start` serves the same data
on the same port again, as a restarted registry would).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from schemas.contract import backward_problems
from schemas.schema_files import SchemaFile, SchemaFileError, parse_text


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
    files = [SchemaFile("old", i + 1, "", {}, p) for i, p in enumerate(olders)]
    return backward_problems(new, files)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state


class FakeRegistry:
    """A Confluent-compatible registry subset on 127.0.0.1 (register, look up, versions, ids,
    config). Use as a context manager; `url` is its address, `requests` what it was asked.
    `close()` stops serving (connections are refused); `start()` again serves the same data on
    the same port."""

    def __init__(self) -> None:
        self._server = _Server(_State())
        self._thread: threading.Thread | None = None

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
        if self._thread is not None:
            raise RuntimeError("the fake registry is already serving")
        if self._server.socket.fileno() < 0:  # closed: serve the same data on the same port
            self._server = _Server(self._server.state, self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-registry", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
