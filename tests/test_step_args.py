"""`step.lua` and `orchestrator.engine.stepargs` agree on every key and argument name."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from orchestrator.engine.stepargs import StepArgs, StepKeys, arg_names, key_names, script_argv

LUA = (Path(__file__).resolve().parent.parent / "orchestrator/engine/lua/step.lua").read_text()


def lua_key_names(text: str) -> list[str]:
    match = re.search(r"local KEY_NAMES = \{([^}]*)\}", text)
    assert match, "step.lua declares no KEY_NAMES table"
    return re.findall(r"'([a-z_]+)'", match.group(1))


def lua_uses(text: str, table: str) -> set[str]:
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    return set(re.findall(rf"\b{table}\.([a-z_]+)", code))


def test_keys_are_passed_in_the_order_the_script_names_them() -> None:
    """KEYS[i] in the script is the i-th field of StepKeys."""
    assert lua_key_names(LUA) == key_names()


def test_every_key_the_script_reads_is_named() -> None:
    """The script reads only keys it named, and uses every key Python passes."""
    assert lua_uses(LUA, "K") == set(key_names())


def test_every_argument_the_script_reads_is_built_and_every_built_one_is_read() -> None:
    """A.<name> in the script is exactly the set of StepArgs fields."""
    assert lua_uses(LUA, "A") == set(arg_names())


def test_the_checks_see_a_name_missing_on_either_side() -> None:
    """The parsers are not vacuous: a renamed argument or key shows up as a difference."""
    renamed = LUA.replace("A.expected_version", "A.expected_versions")
    assert lua_uses(renamed, "A") != set(arg_names())
    reordered = LUA.replace("'saga', 'history'", "'history', 'saga'")
    assert lua_key_names(reordered) != key_names()


def test_argv_is_the_named_json_then_binary_outbox_triples() -> None:
    """ARGV[1] decodes to the named arguments; binary outbox values pass untouched after it."""
    args = StepArgs(
        message_id="m1",
        expected_version=3,
        applied=True,
        saga_id="s1",
        entered_ms=1_700_000_000_123,
        state_changed=False,
        final=False,
        retention_s=0,
        tombstone_retention_s=0,
        fields=["state", "pending"],
        drop_fields=["last_error"],
        history='["at","x"]',
        history_cap=64,
        remember="seen",
        skip_recorded=False,
        seen_cap=64,
        timers=[],
        cancel_timers=[],
    )
    argv = script_argv(args, [(b"s1", b"\x00\xff avro", b"[]")])
    assert orjson.loads(argv[0]) == {name: getattr(args, name) for name in arg_names()}
    assert argv[1:] == [b"s1", b"\x00\xff avro", b"[]"]
    keys = StepKeys(*(f"k:{n}" for n in key_names()))
    assert keys.as_list() == [f"k:{n}" for n in key_names()]
