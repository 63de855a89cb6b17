"""Hostile input to the `saga` operations commands: one line on stderr, exit 2, no traceback.
Everything here is refused before any connection is made, so no infrastructure is needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.ops.cli import app

#: nothing listens here: a command that got past validation would fail with exit 1, not 2
ENV = {"SAGA_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "SAGA_REDIS_URL": "redis://127.0.0.1:1/0"}


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args), env=ENV)
    return res.exit_code, res.stderr


def assert_input_error(args: list[str], needle: str) -> None:
    code, err = run(*args)
    assert code == 2, (args, code, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], err


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--older-than", "10x"],
        ["list", "--older-than", "-5m"],
        ["list", "--older-than", "m"],
        ["stuck", "--older-than", "10 minutes"],
        ["stuck", "--older-than", ""],
    ],
)
def test_bad_durations(args: list[str]) -> None:
    """A duration must be a whole number with a unit."""
    assert_input_error(args, "invalid duration")


@pytest.mark.parametrize(
    "bad_id",
    ["has space", "{braces}", "a" * 129, "colon:id", "pipe|id", ".leading-dot", "é"],
)
@pytest.mark.parametrize("command", ["status", "retry", "abort", "resume"])
def test_bad_saga_ids(command: str, bad_id: str) -> None:
    """Saga ids become Redis keys: spaces, braces, separators and overlong ids are refused."""
    assert_input_error([command, bad_id], "invalid saga id")


def test_bad_saga_id_for_skip_compensation_and_filters() -> None:
    """The same check guards skip-compensation, dlq --saga and start-order --saga-id."""
    assert_input_error(["skip-compensation", "{x}", "--step", "s", "--reason", "r"], "saga id")
    assert_input_error(["dlq", "list", "--saga", "a b"], "invalid saga id")
    assert_input_error(["start-order", "--saga-id", "a b"], "invalid saga id")


BAD_POSITIONS = ["1-2", "a:b", "1:", ":5", "1:2:3", "x1:4", "0:99999999999999999999"]


@pytest.mark.parametrize("pos", BAD_POSITIONS)
def test_bad_positions(pos: str) -> None:
    """A dead-letter position is <partition>:<offset>."""
    assert_input_error(["dlq", "show", pos], "invalid position")
    assert_input_error(["dlq", "replay", pos], "invalid position")


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    """Missing files, directories, invalid JSON and non-objects are named in one line."""
    missing = str(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"sagaId": "x",')
    array = tmp_path / "array.json"
    array.write_text("[1, 2]")
    assert_input_error(["start-order", "--file", missing], "no such file")
    assert_input_error(["start-order", "--file", str(tmp_path)], "is a directory")
    assert_input_error(["start-order", "--file", str(broken)], "invalid JSON")
    assert_input_error(["start-order", "--file", str(array)], "expected a JSON object")
    assert_input_error(["dlq", "replay", "0:1", "--value-file", missing], "no such file")
    assert_input_error(["dlq", "replay", "0:1", "--value-file", str(broken)], "invalid JSON")


def test_invalid_orders(tmp_path: Path) -> None:
    """An order the orchestrator would dead-letter is refused up front, naming what is wrong."""
    f = tmp_path / "order.json"
    f.write_text('{"customerId": "c", "amount": "1.00"}')
    assert_input_error(["start-order", "--file", str(f)], "missing items")
    assert_input_error(["start-order", "--customer", "c", "--item", "sku:x"], "invalid item")
    assert_input_error(
        ["start-order", "--customer", "c", "--item", "sku", "--amount", "-1"], "amount"
    )
    f.write_text('{"command": "StartSaga", "customerId": "c"}')
    assert_input_error(["start-order", "--file", str(f)], "expected a StartOrder")
    assert_input_error(
        ["start-order", "--customer", "c", "--item", "s", "--amount", "1", "--traceparent", "x"],
        "invalid traceparent",
    )


def test_other_bad_values() -> None:
    """States, times, rates, settings and replays without a target are refused."""
    assert_input_error(["list", "--state", "bogus"], "invalid state")
    assert_input_error(["dlq", "list", "--since", "yesterday"], "invalid time")
    assert_input_error(["dlq", "replay", "--all", "--rate", "0"], "--rate")
    assert_input_error(["dlq", "replay"], "say what to replay")
    assert_input_error(["list", "--prefix", "bad prefix"], "invalid setting")


def test_value_file_needs_a_position(tmp_path: Path) -> None:
    """--value-file replaces one record's value, so it needs that record's position."""
    f = tmp_path / "v.json"
    f.write_text("{}")
    assert_input_error(["dlq", "replay", "--all", "--value-file", str(f)], "position")


def test_unreachable_infrastructure_is_one_line_exit_1() -> None:
    """Valid input but nothing listening: exit 1 with one line, no traceback."""
    code, err = run("status", "some-saga", "--redis", "redis://127.0.0.1:1/0")
    assert code == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("error: Kafka or Redis did not answer")
