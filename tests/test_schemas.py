"""The Avro schema files: parse, match the models (no drift), evolve backward-compatibly, and the
`saga schemas` commands that check and register them."""

from __future__ import annotations

import copy
import io
import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError
from pydantic import Field
from typer.testing import CliRunner

from schemas import avro, codec
from schemas.cli import app
from schemas.messages import MESSAGE_TYPES, StartOrder, StepFailed
from schemas.registry import subject_for
from tests.support.registry import real_registry, registry_url

runner = CliRunner()
SS = avro.default_schema_set()

#: Registry-less ids are derived from each schema's canonical form. If this table fails, a schema
#: file was changed in place: move the previous text to history/<Name>.v<N>.avsc first (so records
#: already written with it stay readable), then update the table.
PINNED_LOCAL_IDS = {
    ("OperatorCommand", 1): 0x441B2491,
    ("SagaCommand", 1): 0x79584341,
    ("StartOrder", 1): 0x45E07A54,
    ("StartOrder", 2): 0x43FAEFF9,
    ("StartOrder", 3): 0x694865AB,
    ("StartSaga", 1): 0x4F61A937,
    ("StepCompensated", 1): 0x453E8EA0,
    ("StepCompleted", 1): 0x74873CAD,
    ("StepFailed", 1): 0x549A2D94,
    ("TimerFired", 1): 0x47923328,
}


def _copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "avro"
    shutil.copytree(avro.SCHEMA_DIR, target)
    return target


def _parse(raw: dict[str, Any]) -> dict[str, Any]:
    return avro.parse_text(json.dumps(raw))[1]


def _add_field(raw: dict[str, Any], fld: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(raw)
    new["fields"].append(fld)
    return new


# ------------------------------------------------------------------------------ the files


def test_every_message_type_has_a_schema_and_nothing_else() -> None:
    assert set(SS.current) == set(MESSAGE_TYPES)


def test_every_schema_file_parses_and_is_named_after_its_record() -> None:
    for sf in SS.all_files():
        assert sf.path is not None
        fastavro.parse_schema(json.loads(sf.path.read_text()))
        assert sf.full_name == f"saga.messages.{sf.name}"


def test_the_whole_contract_checks_clean() -> None:
    report = avro.check_contract()
    assert report.ok, report.problems
    assert any("BACKWARD_TRANSITIVE" in n for n in report.notes)


def test_local_ids_are_pinned() -> None:
    got = {(sf.name, sf.version): sf.local_id for sf in SS.all_files()}
    assert got == PINNED_LOCAL_IDS, (
        "a schema file changed in place: keep the old version in history/ (see this test's table)"
    )
    assert all(0x4000_0000 <= i <= 0x7FFF_FFFF for i in got.values())
    assert len(set(got.values())) == len(got)


# ------------------------------------------------------------------------------ model drift


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_model_and_schema_agree(name: str) -> None:
    assert avro.record_drift(MESSAGE_TYPES[name], SS.current[name].raw) == []


def test_schema_field_names_are_the_models_camel_case_aliases() -> None:
    for name, model in MESSAGE_TYPES.items():
        avro_names = {f["name"] for f in SS.current[name].raw["fields"]}
        assert avro_names == {fi.alias for fi in model.model_fields.values()}
        assert all(n[0].islower() and "_" not in n for n in avro_names)


def test_drift_is_caught_field_by_field() -> None:
    raw = copy.deepcopy(SS.current["StartOrder"].raw)
    by_name = {f["name"]: f for f in raw["fields"]}
    raw["fields"].remove(by_name["customerId"])  # missing from the schema
    by_name["shippingAddress"]["type"] = "string"  # optional in the model, required here
    by_name["shippingAddress"].pop("default")
    by_name["currency"]["default"] = "EUR"  # default differs
    by_name["orderId"]["type"] = ["null", "long"]  # type differs
    by_name["items"]["type"]["items"]["fields"][1]["type"] = "string"  # nested record
    raw["fields"].append({"name": "gift_wrap", "type": "boolean", "default": False})
    problems = avro.record_drift(StartOrder, raw)
    text = "\n".join(problems)
    assert "StartOrder.customerId: in the model, missing from the schema" in text
    assert (
        "StartOrder.shippingAddress: the model says optional<string>, the schema says string"
        in text
    )
    assert "StartOrder.currency: default 'EUR' in the schema, 'USD' in the model" in text
    assert (
        "StartOrder.orderId: the model says optional<string>, the schema says optional<integer>"
        in text
    )
    assert (
        "StartOrder.items[OrderItem].quantity: the model says integer, the schema says string"
        in text
    )
    assert "StartOrder.gift_wrap: schema field names are camelCase" in text
    assert "StartOrder.gift_wrap: in the schema, missing from the model" in text


def test_drift_is_caught_when_the_model_grows() -> None:
    class GrownStepFailed(StepFailed):
        error_code: str | None = None
        backoff_ms: int = Field(default=100)

    problems = avro.record_drift(GrownStepFailed, SS.current["StepFailed"].raw, "StepFailed")
    assert problems == [
        "StepFailed.backoffMs: in the model, missing from the schema",
        "StepFailed.errorCode: in the model, missing from the schema",
    ]


def test_required_and_generated_fields_must_not_have_schema_defaults() -> None:
    raw = copy.deepcopy(SS.current["StepFailed"].raw)
    for f in raw["fields"]:
        if f["name"] == "retryable":
            f["default"] = True
        if f["name"] == "messageId":
            f["default"] = "x"
    problems = avro.record_drift(StepFailed, raw)
    assert "StepFailed.retryable: required in the model but has a default in the schema" in problems
    assert (
        "StepFailed.messageId: generated per message in the model; the schema must have no default"
        in problems
    )


def test_free_form_dicts_are_marked_json_strings() -> None:
    for name in ("StartSaga", "SagaCommand"):
        (data,) = [f for f in SS.current[name].raw["fields"] if f["name"] == "data"]
        assert data["type"] == "string" and data[avro.JSON_FIELD_MARK] is True
        assert data["default"] == "{}"
    raw = copy.deepcopy(SS.current["StartSaga"].raw)
    for f in raw["fields"]:
        f.pop(avro.JSON_FIELD_MARK, None)
    assert avro.record_drift(MESSAGE_TYPES["StartSaga"], raw) == [
        "StartSaga.data: the model says json, the schema says string"
    ]


# ------------------------------------------------------------------------------ evolution


def test_history_has_an_older_start_order() -> None:
    v1 = SS.history["StartOrder"][0]
    names = {f["name"] for f in v1.raw["fields"]}
    assert "shippingAddress" not in names and "paymentMethod" not in names


@pytest.mark.parametrize(
    "old", [sf for name in sorted(SS.history) for sf in SS.history[name]], ids=lambda sf: sf.label
)
def test_newest_schema_reads_every_older_version(old: avro.SchemaFile) -> None:
    """BACKWARD_TRANSITIVE through fastavro's schema resolution, on sample data of every union
    branch written with the old version."""
    assert avro.read_with(old.parsed, SS.current[old.name].parsed) == []


def _v1_start_order() -> dict[str, Any]:
    return {
        "messageId": "m-1",
        "sagaId": "order-1",
        "sagaType": "order_fulfillment",
        "messageType": "StartOrder",
        "correlationId": None,
        "causationId": None,
        "time": datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
        "traceparent": None,
        "orderId": "A-1",
        "customerId": "c-9",
        "items": [{"productId": "p-1", "quantity": 3}],
        "amount": Decimal("12.50"),
        "currency": "EUR",
    }


def test_a_record_written_with_v1_decodes_into_todays_model() -> None:
    v1 = SS.history["StartOrder"][0]
    buf = io.BytesIO()
    buf.write(avro.header(v1.local_id))
    fastavro.schemaless_writer(buf, v1.parsed, _v1_start_order())
    avro.use(avro.SchemaTable.local())
    msg = codec.decode(buf.getvalue())
    assert isinstance(msg, StartOrder)
    assert msg.payment_method == "card" and msg.shipping_address is None  # the new defaults
    assert msg.amount == Decimal("12.50") and msg.items[0].quantity == 3


def test_adding_a_field_without_default_breaks_backward_compatibility() -> None:
    current = SS.current["StartOrder"]
    bad = _parse(_add_field(current.raw, {"name": "giftWrap", "type": "boolean"}))
    # fastavro's reader-schema resolution refuses old data outright ...
    v1 = SS.history["StartOrder"][0]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v1.parsed, _v1_start_order())
    buf.seek(0)
    with pytest.raises(SchemaResolutionError, match="giftWrap"):
        fastavro.schemaless_reader(buf, v1.parsed, bad)
    # ... and the check names every version it can no longer read.
    problems = avro.backward_problems(bad, SS.versions("StartOrder"))
    assert len(problems) == len(SS.versions("StartOrder"))
    assert problems[0].startswith("StartOrder v1: data written with it cannot be read")
    assert "giftWrap" in problems[0]


def test_adding_a_field_with_a_default_keeps_backward_compatibility() -> None:
    good_raw = _add_field(
        SS.current["StartOrder"].raw, {"name": "giftWrap", "type": "boolean", "default": False}
    )
    assert avro.backward_problems(_parse(good_raw), SS.versions("StartOrder")) == []


def test_changing_a_type_breaks_backward_compatibility() -> None:
    raw = copy.deepcopy(SS.current["StepFailed"].raw)
    for f in raw["fields"]:
        if f["name"] == "retryable":
            f["type"] = "string"
    assert avro.backward_problems(_parse(raw), SS.versions("StepFailed"))


def test_making_an_optional_field_required_breaks_backward_compatibility() -> None:
    raw = copy.deepcopy(SS.current["StartOrder"].raw)
    for f in raw["fields"]:
        if f["name"] == "shippingAddress":
            f["type"], f["default"] = "string", ""
    # only the null branch of older data shows it: the samples cover every union branch
    assert avro.backward_problems(_parse(raw), [SS.current["StartOrder"]])


# ------------------------------------------------------------------------------ loading errors


def test_broken_files_are_reported_with_their_path(tmp_path: Path) -> None:
    d = _copy_schemas(tmp_path)
    (d / "StepFailed.avsc").write_text("{not json")
    (d / "TimerFired.avsc").write_text(
        (d / "TimerFired.avsc").read_text().replace('"name": "TimerFired"', '"name": "Timer"')
    )
    (d / "history" / "StartOrder.v4.avsc").write_text((d / "StartOrder.avsc").read_text())
    (d / "history" / "Nope.v1.avsc").write_text((d / "StartOrder.avsc").read_text())
    (d / "history" / "junk.avsc").write_text("{}")
    with pytest.raises(avro.SchemaFileError) as err:
        avro.load_schema_set(d)
    text = "\n".join(err.value.problems)
    assert "StepFailed.avsc: not JSON" in text
    assert (
        "record is named saga.messages.Timer, the file name says saga.messages.TimerFired" in text
    )
    assert "StartOrder: history versions must be v1..v3 without gaps, got [1, 2, 4]" in text
    assert "history has versions of Nope" in text
    assert "junk.avsc: history files are named <Name>.v<N>.avsc" in text


def test_invalid_avro_is_reported(tmp_path: Path) -> None:
    d = _copy_schemas(tmp_path)
    raw = json.loads((d / "StepFailed.avsc").read_text())
    raw["fields"][0]["type"] = "strnig"
    (d / "StepFailed.avsc").write_text(json.dumps(raw))
    report = avro.check_contract(d)
    assert not report.ok
    assert "StepFailed.avsc: invalid Avro schema" in report.problems[0]


# ------------------------------------------------------------------------------ the CLI


def test_cli_check_passes_on_the_shipped_schemas() -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "ok: every schema matches its model" in result.output
    assert "ok: every schema reads all its older versions (BACKWARD_TRANSITIVE)" in result.output


def test_cli_check_fails_on_an_incompatible_schema(tmp_path: Path) -> None:
    d = _copy_schemas(tmp_path)
    raw = json.loads((d / "StartOrder.avsc").read_text())
    raw["fields"].append({"name": "giftWrap", "type": "boolean"})
    (d / "StartOrder.avsc").write_text(json.dumps(raw, indent=2))
    result = runner.invoke(app, ["check", "--dir", str(d)])
    assert result.exit_code == 1
    assert "error: StartOrder.giftWrap: in the schema, missing from the model" in result.output
    assert "error: StartOrder v1: data written with it cannot be read" in result.output
    assert "schemas check failed" in result.output


def test_cli_check_fails_on_a_missing_schema(tmp_path: Path) -> None:
    d = _copy_schemas(tmp_path)
    (d / "TimerFired.avsc").unlink()
    result = runner.invoke(app, ["check", "--dir", str(d)])
    assert result.exit_code == 1
    assert "TimerFired: a message type without a schema file" in result.output


def test_cli_list_shows_subjects_and_local_ids() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("StartOrder"))
    assert "saga.messages.StartOrder" in line
    assert f"v1={PINNED_LOCAL_IDS[('StartOrder', 1)]}" in line
    assert f"v2={PINNED_LOCAL_IDS[('StartOrder', 2)]}" in line


def test_cli_register_with_an_unreachable_registry_says_so_in_one_line() -> None:
    result = runner.invoke(app, ["register", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: schema registry at http://127.0.0.1:9 unreachable:")


def test_cli_register_with_a_bad_url_or_level() -> None:
    result = runner.invoke(app, ["register", "--url", "ftp://example"])
    assert result.exit_code == 1 and "is not usable" in result.output
    result = runner.invoke(app, ["register", "--url", "http://127.0.0.1:9", "--compatibility", "x"])
    assert result.exit_code == 1 and "unknown compatibility level 'x'" in result.output


def test_cli_register_without_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGA_SCHEMA_REGISTRY_URL", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no .env with a registry URL here
    result = runner.invoke(app, ["register"])
    assert result.exit_code == 2
    assert "no registry URL" in result.output


def test_cli_register_against_a_registry(tmp_path: Path) -> None:
    """`saga schemas register` against a real registry (Apicurio's Confluent-compatible API)."""
    with real_registry(registry_url()) as registry:
        result = runner.invoke(app, ["register", "--url", registry.url])
        assert result.exit_code == 0, result.output
        assert set(registry.subjects) == {subject_for(n) for n in MESSAGE_TYPES}
        assert "registered saga.messages.StartOrder id=" in result.output
        assert registry.compatibility("saga.messages.StartOrder") == "BACKWARD_TRANSITIVE"

        again = runner.invoke(app, ["register", "--url", registry.url])  # idempotent
        assert again.exit_code == 0 and again.output == result.output

        # the registry itself now refuses a schema that cannot read what was registered
        d = _copy_schemas(tmp_path)
        raw = json.loads((d / "StartOrder.avsc").read_text())
        raw["fields"].append({"name": "giftWrap", "type": "boolean"})
        (d / "StartOrder.avsc").write_text(json.dumps(raw))
        refused = runner.invoke(app, ["register", "--url", registry.url, "--dir", str(d)])
        assert refused.exit_code == 1
        assert "answered HTTP 409" in refused.output and "giftWrap" in refused.output
        assert len(refused.output.strip().splitlines()) == 1
