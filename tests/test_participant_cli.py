"""`saga participant ...` and `saga inventory ...` through the real CLI (typer's runner)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from orchestrator.cli import app
from schemas.config import Settings

runner = CliRunner()


def env(settings: Settings) -> dict[str, str]:
    return {"SAGA_REDIS_URL": settings.redis_url, "SAGA_KEY_PREFIX": settings.key_prefix}


def invoke(settings: Settings, *args: str) -> str:
    result = runner.invoke(app, list(args), env=env(settings))
    assert result.exit_code == 0, result.output
    return result.output


def test_fault_commands_write_the_faults_hash(settings: Settings) -> None:
    """Each failure injection command sets its fields; clear removes them all."""
    invoke(settings, "participant", "fail-next", "payment", "--count", "3", "--non-retryable")
    invoke(settings, "participant", "fail-rate", "payment", "0.25", "--compensations")
    invoke(settings, "participant", "latency", "payment", "250")
    invoke(settings, "participant", "no-reply", "payment", "--count", "2", "--after-effect")
    shown = json.loads(invoke(settings, "participant", "faults", "payment"))
    assert shown["fail_next"] == "3" and shown["fail_next_retryable"] == "0"
    assert shown["fail_rate"] == "0.25" and shown["fail_rate_compensations"] == "1"
    assert shown["latency_ms"] == "250"
    assert shown["no_reply"] == "2" and shown["no_reply_after_effect"] == "1"
    invoke(settings, "participant", "clear", "payment")
    assert json.loads(invoke(settings, "participant", "faults", "payment")) == {}


def test_fail_rate_rejects_a_rate_above_one(settings: Settings) -> None:
    result = runner.invoke(app, ["participant", "fail-rate", "payment", "1.5"], env=env(settings))
    assert result.exit_code == 2


def test_set_stock_and_show(settings: Settings) -> None:
    """set-stock then show, as a table and as JSON."""
    invoke(settings, "inventory", "set-stock", "SKU-1", "100")
    invoke(settings, "inventory", "set-stock", "SKU-2", "7")
    assert json.loads(invoke(settings, "inventory", "show", "--json")) == {
        "SKU-1": {"available": 100, "reserved": 0},
        "SKU-2": {"available": 7, "reserved": 0},
    }
    table = invoke(settings, "inventory", "show", "SKU-2")
    assert "SKU-2" in table and "SKU-1" not in table
    ledger = json.loads(invoke(settings, "participant", "ledger"))
    assert ledger["stock"] == {"SKU-1": 100, "SKU-2": 7}


def test_run_rejects_an_unknown_participant(settings: Settings) -> None:
    result = runner.invoke(app, ["participant", "run", "teleporter"], env=env(settings))
    assert result.exit_code == 2 and "unknown participant" in result.output
