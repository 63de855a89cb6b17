"""Bearer tokens on the HTTP API: the tokens file, 401 and 403 on the real stack, roles per
route, the operator the history records, loopback only without tokens, hostile headers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiohttp import web

from orchestrator.config import OrchestratorSettings
from orchestrator.engine.sagas import SagaModules
from orchestrator.errors import ConfigError
from orchestrator.ops import auth
from orchestrator.ops.http import HttpApi, Route, caller, json_response
from schemas.config import Settings
from schemas.messages import SagaCommand
from tests.conftest import ROOT
from tests.support.kafka import wait_for
from tests.support.orch import SagaReader, running
from tests.support.scripted import Answer, ScriptedParticipant
from tests.test_http import ORDER, api_alone, assert_json_error, free_port

READ_TOKEN = "read-0123456789abcdef-secret"
OPERATE_TOKEN = "operate-0123456789abcdef-secret"
TOKENS = f"""# name     role     token
prometheus read     {READ_TOKEN}

ops-alice  operate  {OPERATE_TOKEN}
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


READ, OPERATE = bearer(READ_TOKEN), bearer(OPERATE_TOKEN)


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    return path


def assert_401(r: httpx.Response) -> None:
    assert_json_error(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer"), r.headers


# ---- the tokens file ----


def test_tokens_file_names_roles_comments_and_blank_lines(tmp_path: Path) -> None:
    """Comments, blank lines, a BOM and CRLF are fine; each token identifies its name and role,
    and `operate` implies `read`."""
    path = tmp_path / "tokens"
    path.write_bytes(("\ufeff\n  # comment\n" + TOKENS).replace("\n", "\r\n").encode())
    tokens = auth.load(str(path))
    assert len(tokens) == 2
    assert tokens.identify(f"Bearer {READ_TOKEN}") == auth.Caller("prometheus", "read")
    alice = tokens.identify(f"bearer {OPERATE_TOKEN}")  # the scheme is case-insensitive
    assert alice == auth.Caller("ops-alice", "operate")
    assert alice.may("read") and alice.may("operate")
    assert not tokens.identify(f"Bearer {READ_TOKEN}").may("operate")
    assert READ_TOKEN not in repr(tokens._entries)


SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t"
OTHER = "0ther-0ther-0ther-0ther-0ther"
BAD_LINES = [
    ("alice operate", 3, "found 2 fields"),
    (f"alice operate {SECRET} extra", 3, "<name> <role> <token>"),
    (f"alice admin {SECRET}", 3, "role"),
    (f"{SECRET} operate alice", 3, "token is 16"),
    ("alice operate short", 3, "token is 16"),
    (f"alice operate t\u00f6k\u00e9n-{SECRET}", 3, "visible ASCII"),
    (f"bad/name operate {SECRET}", 3, "name"),
    (f"alice read {OTHER}\nalice operate {SECRET}", 4, "already used on line 3"),
    (f"alice read {SECRET}\nbob operate {SECRET}", 4, "same token as line 3"),
]


@pytest.mark.parametrize(("lines", "line", "needle"), BAD_LINES)
def test_tokens_file_errors_name_the_line_never_the_token(
    lines: str, line: int, needle: str
) -> None:
    """A bad line is one ConfigError naming the file and line number; no field is echoed."""
    with pytest.raises(ConfigError) as err:
        auth.parse(f"# tokens\n\n{lines}\n", "tokens file /x")
    message = str(err.value)
    assert message.startswith(f"tokens file /x line {line}: ") and needle in message, message
    assert "\n" not in message
    assert all(field not in message for field in (SECRET, OTHER, "alice", "admin", "short"))


def test_unreadable_tokens_file_is_one_config_error(tmp_path: Path) -> None:
    """A missing file, a directory or non-UTF-8 bytes are one line each, without the bytes."""
    latin = tmp_path / "latin"
    latin.write_bytes(f"a read {SECRET}\nb read caf\xe9-{OTHER}\n".encode("latin-1"))
    for path, needle in [
        (tmp_path / "nowhere", "cannot read it (No such file or directory)"),
        (tmp_path, "cannot read it"),
        (latin, "line 2: not UTF-8 text"),
    ]:
        with pytest.raises(ConfigError, match=r"^tokens file ") as err:
            auth.load(str(path))
        assert needle in str(err.value) and "\n" not in str(err.value)
        assert OTHER not in str(err.value)


# ---- loopback only without tokens ----


def api(**overrides: object) -> HttpApi:
    daemon: Any = SimpleNamespace()
    return HttpApi(OrchestratorSettings(http_port=1, **overrides), SagaModules(), daemon)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_without_tokens_loopback_addresses_are_allowed(host: str, tmp_path: Path) -> None:
    """No tokens file, or one with only comments, serves without authentication on loopback."""
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n\n")
    assert not api(http_host=host).tokens
    assert not api(http_host=host, http_tokens_file=str(empty)).tokens


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "example.com"])
def test_without_tokens_other_addresses_are_a_config_error(host: str, tmp_path: Path) -> None:
    """Another address without tokens (or with an empty tokens file) is a one-line ConfigError;
    with tokens it is allowed."""
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.write_text("# nobody yet\n")
    full.write_text(TOKENS)
    for overrides in ({}, {"http_tokens_file": str(empty)}):
        with pytest.raises(ConfigError, match=r"^SAGA_HTTP_HOST=.* needs tokens .*loopback"):
            api(http_host=host, **overrides)
    assert len(api(http_host=host, http_tokens_file=str(full)).tokens) == 2


def run_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_HTTP")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", "orchestrator", "run"],
        env={**base, "SAGA_HTTP_PORT": str(free_port()), "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_cli_refuses_a_bad_http_security_setting_in_one_line(tmp_path: Path) -> None:
    """`saga orchestrator run` with 0.0.0.0 and no tokens, a missing or a malformed tokens file
    prints one line and exits 2 before it connects to anything."""
    bad = tmp_path / "bad"
    bad.write_text(f"ops-alice operate {SECRET} extra\n")
    cases = [
        ({"SAGA_HTTP_HOST": "0.0.0.0"}, "error: SAGA_HTTP_HOST='0.0.0.0' needs tokens"),
        ({"SAGA_HTTP_TOKENS_FILE": str(tmp_path / "nowhere")}, "error: tokens file "),
        ({"SAGA_HTTP_TOKENS_FILE": str(bad)}, f"error: tokens file {bad} line 1: expected"),
    ]
    for env, start in cases:
        proc = run_cli(env)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith(start), proc.stderr
        assert SECRET not in proc.stderr


# ---- the API on the real stack ----


async def test_without_a_valid_token_requests_get_401_and_probes_stay_open(
    settings: Settings, tokens_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Missing, unknown, malformed, Basic, empty, huge and non-ASCII credentials are 401 with
    a JSON error and a Bearer challenge on every route, /metrics included; /livez and /readyz
    answer anyone; no token reaches the log."""
    caplog.set_level(logging.INFO, logger="orchestrator.ops.http")
    port = free_port()
    hostile: list[dict[str, Any]] = [
        {},
        bearer("wrong-0123456789abcdef-secret"),
        {"Authorization": "Bearer"},
        {"Authorization": ""},
        {"Authorization": "Basic b3BzLWFsaWNlOnB3"},
        {"Authorization": f"Token {OPERATE_TOKEN}"},
        {"Authorization": OPERATE_TOKEN},
        {"Authorization": f"Bearer  {OPERATE_TOKEN}"},
        {"Authorization": f"Bearer {OPERATE_TOKEN} x"},
        {"Authorization": f"Bearer {OPERATE_TOKEN[:-1]}"},
        {"Authorization": "Bearer " + "a" * 8000},
        {"Authorization": f"Bearer {OPERATE_TOKEN}\u00e9".encode()},
        {"Authorization": "Bearer t\u00f6k\u00e9n".encode("latin-1")},
    ]
    async with (
        running(settings, http_port=port, http_tokens_file=str(tokens_file)),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        for headers in hostile:
            for method, path in [
                ("GET", "/api/sagas"),
                ("GET", "/metrics"),
                ("POST", "/api/orders"),
                ("POST", "/api/sagas/some-saga/abort"),
                ("GET", "/nowhere"),
            ]:
                r = await http.request(method, path, headers=headers, json=ORDER)
                assert_401(r)
        missing = await http.get("/api/sagas")
        unknown = await http.get("/api/sagas", headers=bearer("wrong-0123456789abcdef-secret"))
        too_big = await http.get("/api/sagas", headers={"Authorization": "Bearer " + "a" * 70_000})
        probes = [await http.get(p, headers=h) for p in ("/livez", "/readyz") for h in hostile]
        still = await http.get("/api/sagas", headers=READ)
    assert missing.json()["error"].startswith("authentication required")
    assert missing.headers["www-authenticate"] == 'Bearer realm="saga"'
    assert unknown.json()["error"] == "unknown token"
    assert 'error="invalid_token"' in unknown.headers["www-authenticate"]
    assert too_big.status_code in (400, 431) and "Traceback" not in too_big.text
    assert [p.status_code for p in probes] == [200] * len(probes)
    assert still.status_code == 200
    assert "401 for GET /api/sagas" in caplog.text
    assert OPERATE_TOKEN[:-1] not in caplog.text and "wrong-0123" not in caplog.text


async def test_a_read_token_reads_and_gets_403_for_writes(
    settings: Settings, tokens_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`read` may GET sagas, lists and /metrics; posting an order or an action is 403 naming the
    token and the role needed, and the 403 is logged with the token's name only."""
    caplog.set_level(logging.INFO, logger="orchestrator.ops.http")
    port = free_port()
    async with (
        running(settings, http_port=port, http_tokens_file=str(tokens_file)),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=READ) as http,
    ):
        listed = await http.get("/api/sagas")
        metrics = await http.get("/metrics")
        head = await http.head("/metrics")
        unknown = await http.get("/api/sagas/nobody")
        order = await http.post("/api/orders", json={**ORDER, "sagaId": "auth-read-1"})
        action = await http.post("/api/sagas/nobody/abort", json={"reason": "x"})
    assert listed.status_code == 200 and listed.json() == {"sagas": []}
    assert metrics.status_code == 200 and "saga_sagas_started_total" in metrics.text
    assert head.status_code == 200
    assert_json_error(unknown, 404, "no saga")
    for r in (order, action):
        assert_json_error(r, 403, "token 'prometheus' has the role read")
        assert r.json()["error"].endswith("needs operate")
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    refused = [r for r in caplog.records if "403" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.WARNING] * 2
    assert "prometheus" in refused[0].getMessage()
    assert READ_TOKEN not in caplog.text


async def test_an_operate_token_acts_and_its_name_is_the_recorded_operator(
    settings: Settings, tokens_file: Path, reader: SagaReader
) -> None:
    """`operate` posts orders and actions (202); the history records the token's name as the
    operator, not the `operator` the body claims; `read` is refused the same action."""
    broken = {"on": True}

    def behaviour(cmd: SagaCommand) -> Answer:
        if cmd.step == "create_shipment" and not cmd.compensation:
            return "fail"
        return "fail" if cmd.compensation and broken["on"] else "ok"

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with (
        ScriptedParticipant(settings, behaviour),
        running(settings, http_port=port, http_tokens_file=str(tokens_file)),
        httpx.AsyncClient(base_url=base, timeout=30, headers=OPERATE) as http,
    ):
        order = await http.post("/api/orders", json={**ORDER, "sagaId": "auth-op-1"})

        async def needs_person() -> bool:
            return await reader.state("auth-op-1") == "needs_intervention"

        await wait_for(needs_person, 60, "needs_intervention")
        broken["on"] = False
        body = {"reason": "fixed", "operator": "mallory"}
        as_reader = await http.post("/api/sagas/auth-op-1/resume", json=body, headers=READ)
        resume = await http.post("/api/sagas/auth-op-1/resume", json=body)

        async def failed() -> bool:
            return await reader.state("auth-op-1") == "failed"

        await wait_for(failed, 60, "the resumed compensation to finish")
        status = await http.get("/api/sagas/auth-op-1")
    assert order.status_code == 202, order.text
    assert_json_error(as_reader, 403, "needs operate")
    assert resume.status_code == 202 and resume.json()["action"] == "resume", resume.text
    notes = [h["note"] for h in await reader.history("auth-op-1")]
    assert any("operator resume by ops-alice: fixed" in n for n in notes), notes
    assert not any("mallory" in n for n in notes), notes
    assert status.status_code == 200 and status.json()["state"] == "failed"


async def _who(request: web.Request, api: HttpApi) -> web.Response:
    who = caller(request)
    return json_response(200, {"caller": who.name if who else None})


async def test_a_plugin_route_declares_its_role(settings: Settings, tokens_file: Path) -> None:
    """A Route's own role replaces the method's default, and its handler learns the caller; a
    role that does not exist is a ConfigError."""
    routes = [
        Route("POST", "/api/echo", _who, role="read"),
        Route("GET", "/api/secret", _who, role="operate"),
        Route("PUT", "/api/default", _who),
    ]
    sagas = SagaModules(http_routes=routes)
    async with api_alone(settings, sagas, http_tokens_file=str(tokens_file)) as http:
        echo = await http.post("/api/echo", headers=READ)
        secret_read = await http.get("/api/secret", headers=READ)
        secret_op = await http.get("/api/secret", headers=OPERATE)
        default_read = await http.put("/api/default", headers=READ)
        default_op = await http.put("/api/default", headers=OPERATE)
    assert echo.status_code == 200 and echo.json() == {"caller": "prometheus"}
    assert_json_error(secret_read, 403, "GET /api/secret needs operate")
    assert secret_op.json() == {"caller": "ops-alice"}
    assert_json_error(default_read, 403, "needs operate")
    assert default_op.status_code == 200
    with pytest.raises(ConfigError, match="role must be one of"):
        Route("GET", "/x", _who, role="admin")  # type: ignore[arg-type]


async def test_sighup_reloads_the_tokens_file_and_keeps_it_when_unusable(
    settings: Settings, tokens_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGHUP reads the file again: a new token works at once; a malformed file, or one left
    without tokens, is logged and the tokens in use stay."""
    caplog.set_level(logging.INFO, logger="orchestrator.ops.http")
    new = bearer("new-0123456789abcdef-secret")

    async def hup_and_wait(text: str, log_line: str) -> None:
        caplog.clear()
        tokens_file.write_text(text)
        os.kill(os.getpid(), signal.SIGHUP)

        async def logged() -> bool:
            return log_line in caplog.text

        await wait_for(logged, 10, log_line)

    async with api_alone(settings, http_tokens_file=str(tokens_file)) as http:
        before = await http.get("/api/sagas", headers=new)
        await hup_and_wait(TOKENS + f"ci operate {new['Authorization'][7:]}\n", "reloaded: 3")
        after = await http.get("/api/sagas", headers=new)
        await hup_and_wait("ci operate\n", "not reloaded: tokens file")
        kept = await http.get("/api/sagas", headers=new)
        await hup_and_wait("# all gone\n", "not reloaded: the file has none")
        still = await http.get("/api/sagas", headers=READ)
    assert_401(before)
    assert [r.status_code for r in (after, kept, still)] == [200, 200, 200]
