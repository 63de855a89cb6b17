"""`saga participant ...` and `saga inventory ...` through the real CLI (typer's runner), and how
`saga participant run NAME` finds its participants."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from orchestrator.ops.cli import app
from participants.cli import installed, participants_named
from participants.sdk import Participant
from schemas.config import Settings
from tests.conftest import BOTH_REDIS

# the workers' command topics exist before they start, as in a deployment
pytestmark = pytest.mark.participant_topics("built", "one", "two", "three", "ledger", "teleporter")

runner = CliRunner()


def env(settings: Settings) -> dict[str, str]:
    return {
        "SAGA_REDIS_URL": settings.redis_url,
        "SAGA_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "SAGA_KEY_PREFIX": settings.key_prefix,
    }


def invoke(settings: Settings, *args: str) -> str:
    result = runner.invoke(app, list(args), env=env(settings))
    assert result.exit_code == 0, result.output
    return result.output


@BOTH_REDIS  # on the single Redis and on the Redis Cluster
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
    """A rate is a probability: 1.5 is a usage error."""
    result = runner.invoke(app, ["participant", "fail-rate", "payment", "1.5"], env=env(settings))
    assert result.exit_code == 2


@BOTH_REDIS  # on the single Redis and on the Redis Cluster
def test_set_stock_and_show(settings: Settings) -> None:
    """set-stock (with or without a unit price) then show, as a table and as JSON."""
    invoke(settings, "inventory", "set-stock", "SKU-1", "100")
    assert "SKU-2: 7 available at 2.50" in invoke(
        settings, "inventory", "set-stock", "SKU-2", "7", "--price", "2.5"
    )
    assert json.loads(invoke(settings, "inventory", "show", "--json")) == {
        "SKU-1": {"available": 100, "reserved": 0, "price": None},
        "SKU-2": {"available": 7, "reserved": 0, "price": "2.50"},
    }
    table = invoke(settings, "inventory", "show", "SKU-2")
    assert "SKU-2" in table and "SKU-1" not in table and "2.50" in table
    ledger = json.loads(invoke(settings, "participant", "ledger"))
    assert ledger["stock"] == {"SKU-1": 100, "SKU-2": 7}


@pytest.mark.parametrize("price", ["abc", "-1", "1.234", "NaN", "1e10"])
def test_set_stock_refuses_a_price_that_is_not_one(settings: Settings, price: str) -> None:
    """A price is a decimal from 0 to 1e9 with at most 2 places; anything else is a usage
    error (exit 2) that writes nothing."""
    args = ["inventory", "set-stock", "SKU-9", "1", "--price", price]
    result = runner.invoke(app, args, env=env(settings))
    assert result.exit_code == 2 and "invalid price" in result.output
    assert json.loads(invoke(settings, "inventory", "show", "--json")) == {}


def test_run_rejects_an_unknown_participant(settings: Settings) -> None:
    """An unknown short name is a usage error (exit code 2)."""
    result = runner.invoke(app, ["participant", "run", "teleporter"], env=env(settings))
    assert result.exit_code == 2 and "unknown participant" in result.output


def test_run_names_the_installed_participants(settings: Settings) -> None:
    """The error for an unknown name lists what the entry points offer."""
    result = runner.invoke(app, ["participant", "run", "teleporter"], env=env(settings))
    assert "inventory" in result.output and "module:attribute" in result.output


def test_the_samples_are_installed_entry_points() -> None:
    """`all` and each sample resolve through `saga.participants` to Participants."""
    assert {"all", "inventory", "payment", "shipping", "notification"} <= set(installed())
    assert [p.name for p in participants_named("all")] == [
        "inventory",
        "payment",
        "shipping",
        "notification",
    ]
    assert [p.name for p in participants_named("payment")] == ["payment"]


ONE = Participant("one")
SOME = [Participant("two"), Participant("three")]


def build_one() -> Participant:
    return Participant("built")


NOT_ONE = 42


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"{__name__}:ONE", ["one"]),
        (f"{__name__}:SOME", ["two", "three"]),
        (f"{__name__}:build_one", ["built"]),
        ("participants.examples.loyalty:svc", ["loyalty"]),
    ],
)
def test_module_attribute_names_a_participant_a_list_or_a_builder(
    name: str, expected: list[str]
) -> None:
    """module:attribute may be a Participant, a list of them, or a function returning either."""
    assert [p.name for p in participants_named(name)] == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (f"{__name__}:NOT_ONE", "is not a Participant"),
        (f"{__name__}:MISSING", "cannot load"),
        ("no.such.module:svc", "cannot load"),
    ],
)
def test_a_name_that_is_no_participant_is_a_bad_parameter(name: str, message: str) -> None:
    """A clear ValueError (exit code 2 from the CLI), not a traceback."""
    with pytest.raises(ValueError, match=message):
        participants_named(name)


def test_the_sample_plug_ins_add_their_commands() -> None:
    """The order and faults plug-ins (entry points `saga.cli`) are loaded into `saga`."""
    top = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert {"start-order", "inventory"} <= top
    participant = next(g.typer_instance for g in app.registered_groups if g.name == "participant")
    assert participant is not None
    sub = {c.name for c in participant.registered_commands}
    assert {"run", "ledger", "fail-next", "fail-rate", "latency", "no-reply", "clear"} <= sub
    assert "faults" in sub
