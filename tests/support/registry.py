"""The real Schema Registry for tests: Apicurio Registry from `scripts/stack_registry`.

`registry_url()` starts it through the script (a Maven build the first time, then seconds) and
returns its Confluent-compatible URL. Each test gets a `RealRegistry`: the registry emptied of
subjects, seen through a small recording proxy on 127.0.0.1 so a test can

- count what our code asked (`requests`: "GET /schemas/ids/7", paths relative to the API root);
- take the registry away and bring it back (`close()` refuses connections on the proxy's port,
  `start()` serves again on the same port with the same data, like a restarted registry).

The proxy forwards every request unchanged and answers with the registry's status and body: the
answers are Apicurio's own. An in-memory registry restarted for real would come back empty, so
the outage is cut at the proxy.

A test holds `.stack/registry-tests.lock` while it uses the registry, so two pytest processes on
one machine take turns instead of deleting each other's subjects.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "stack_registry"
STACK_DIR = Path(os.environ.get("SAGA_STACK_DIR", ROOT / ".stack"))
URL_FILE = STACK_DIR / "registry.url"
LOCK_FILE = STACK_DIR / "registry-tests.lock"
UP_TIMEOUT_S = 1200  # the first `up` runs the Maven build (downloads, Quarkus augmentation)


def registry_url() -> str:
    """Start the registry with the script (idempotent) and return its URL. When it cannot run,
    fail under CI=true (scripts/test builds it first) and skip otherwise, with the reason."""
    try:
        done = subprocess.run(
            [str(SCRIPT), "up"],
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT_S,
            check=False,
        )
        problem = "" if done.returncode == 0 else (done.stderr or done.stdout).strip()[-2000:]
    except subprocess.TimeoutExpired:
        problem = f"scripts/stack_registry up did not finish in {UP_TIMEOUT_S} s"
    if problem or not URL_FILE.is_file():
        reason = f"no Schema Registry: {problem or f'{URL_FILE} missing after up'}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return URL_FILE.read_text().strip()


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, port: int, requests: list[str]) -> None:
        super().__init__(("127.0.0.1", port), _Forward)
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.api_root = parts.path.rstrip("/")  # e.g. /apis/ccompat/v7, the same on both sides
        self.requests = requests
        self.lock = threading.Lock()


class _Forward(BaseHTTPRequestHandler):
    server: _Proxy

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _forward(self) -> None:
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        path = urlsplit(self.path).path
        with srv.lock:
            srv.requests.append(f"{self.command} {path.removeprefix(srv.api_root)}")
        headers = {k: v for k, v in self.headers.items() if k.lower() in _PASSED}
        conn = http.client.HTTPConnection(srv.upstream_host, srv.upstream_port, timeout=30)
        try:
            conn.request(self.command, self.path, body, headers)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.getheader("Content-Type") or "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = _forward


_PASSED = {"content-type", "accept"}


class RealRegistry:
    """The running Apicurio Registry behind a recording, closable proxy (see the module doc)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._requests: list[str] = []
        self._server = _Proxy(self.upstream, 0, self._requests)
        self._port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """What our code is given: the proxy, with the registry's API path."""
        return f"http://127.0.0.1:{self._port}{self._server.api_root}"

    @property
    def requests(self) -> list[str]:
        with self._server.lock:
            return list(self._requests)

    def start(self) -> RealRegistry:
        if self._thread is not None:
            raise RuntimeError("the registry proxy is already serving")
        if self._server.socket.fileno() < 0:  # closed: listen again on the same port
            self._server = _Proxy(self.upstream, self._port, self._requests)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="registry-proxy", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: connections to `url` are refused until `start()`."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    # -- reading the registry itself (not through the proxy, so `requests` stays ours) ----------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        parts = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
            conn.request(method, parts.path + path, data, headers)
            answer = conn.getresponse()
            text = answer.read().decode()
            if answer.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {answer.status} {text[:300]}")
            return json.loads(text) if text else None
        finally:
            conn.close()

    @property
    def subjects(self) -> dict[str, list[int]]:
        """Each subject and the schema ids of its versions, oldest first."""
        out = {}
        for subject in self._call("GET", "/subjects"):
            versions = self._call("GET", f"/subjects/{subject}/versions")
            out[subject] = [
                int(self._call("GET", f"/subjects/{subject}/versions/{v}")["id"]) for v in versions
            ]
        return out

    def compatibility(self, subject: str) -> str | None:
        return self._call("GET", f"/config/{subject}").get("compatibilityLevel")

    def reset(self) -> None:
        """No subjects (their versions and settings deleted for good), no recorded requests."""
        for subject in self._call("GET", "/subjects"):
            self._call("DELETE", f"/subjects/{subject}")
            self._call("DELETE", f"/subjects/{subject}?permanent=true")
        with self._server.lock:
            self._requests.clear()


@contextmanager
def real_registry(upstream: str) -> Iterator[RealRegistry]:
    """A `RealRegistry` for one test: others' tests wait on the lock, the registry starts empty."""
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        registry = RealRegistry(upstream)
        registry.reset()
        try:
            yield registry.start()
        finally:
            registry.close()
