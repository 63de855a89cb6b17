"""`saga replay`: does a definition still decide recorded histories the way they were decided?

    saga replay --definition mysagas:ORDER_V2 --history order-7           # a saga in Redis
    saga replay --definition mysagas:ORDER_V2 --history golden/x.jsonl    # a golden file
    saga replay --export order-7 > golden/x.jsonl                         # write a golden file

Exit codes: 0 no divergence, 1 a divergence (or no such saga, or its history cannot be
replayed: truncated, or not written by decide), 2 bad input (a definition that does not load, a
file that does not read or parse). The loading and the file format are `replay_io`; the
replay is `orchestrator.core.replay`.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import typer

from infra import redis as redis_factory
from orchestrator.config import OrchestratorSettings
from orchestrator.core.definition import SagaDefinition
from orchestrator.core.replay import Divergence, replay
from orchestrator.engine import history as saga_history
from orchestrator.engine.keys import Keys
from orchestrator.engine.sagas import load_registry
from orchestrator.engine.statecodec import decode_fields, saga_type_of
from orchestrator.ops import InputError, NotFoundError, validate
from orchestrator.ops.command import ops_command
from orchestrator.ops.render import Output
from orchestrator.ops.replay_io import (
    MAX_FILE_BYTES,
    History,
    event_doc,
    export_lines,
    from_redis,
    load_definition,
    outcome_doc,
    parse_file,
    step_list_for,
    with_steps,
)
from schemas.messages import SAGA_ID_PATTERN

_SAGA_ID = re.compile(SAGA_ID_PATTERN)


def _read(path: str) -> History:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        raw = p.read_bytes()
    except OSError as exc:  # missing, a directory, no permission: one line, exit 2
        raise InputError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    return parse_file(raw, path)


def _is_file(text: str) -> bool:
    """A saga id has no '/'; an existing path, or anything that is not a saga id, is a file."""
    return "/" in text or Path(text).exists() or not _SAGA_ID.match(text)


async def _from_redis(
    settings: OrchestratorSettings, saga_id: str, replayed: SagaDefinition | None
) -> tuple[History, SagaDefinition | None]:
    """The saga's recorded history and its own definition (None when not registered here)."""
    keys = Keys(settings.key_prefix)
    async with redis_factory.connected(settings, decode=True) as redis:
        fields = decode_fields(await redis.hgetall(keys.saga(saga_id)))
        entries = await saga_history.read(redis, keys.history(saga_id))
    if not fields:
        raise NotFoundError(
            f"no saga {saga_id!r} in Redis (key prefix {settings.key_prefix!r}), and no file "
            "by that name"
        )
    kind = saga_type_of(fields)
    own = load_registry(settings.saga_modules).version(*kind) if kind else None
    fallback = replayed or own
    names = step_list_for(own, fallback) if fallback else []
    where = f"saga {saga_id} in Redis"
    return from_redis(saga_id, fields, entries, names, where), own


def _report(out: Output, h: History, d: SagaDefinition, found: Divergence | None) -> None:
    n = len(h.inputs)
    if out.as_json:
        div = None
        if found is not None:
            div = {
                "index": found.index,
                "input": event_doc(found.event),
                "reason": found.reason,
                "recorded": outcome_doc(found.expected),
                "replayed": outcome_doc(found.got),
                "note": found.note,
            }
        out.json(
            {
                "source": h.source,
                "sagaId": h.saga_id,
                "sagaType": h.saga_type,
                "recordedVersion": h.definition_version,
                "definition": {"name": d.name, "version": d.version},
                "inputs": n,
                "divergence": div,
            }
        )
        return
    out.text(
        f"replaying {h.source} ({h.saga_type} v{h.definition_version}, {n} inputs) "
        f"under {d.name} v{d.version}"
    )
    if found is None:
        out.text(f"no divergence ({n} inputs)")
        return
    at, note = h.notes[found.index]
    out.text(f"divergence at input {found.index} of {n}: {found.reason}")
    sent = found.reason.startswith("sent")  # then the commands are what to show
    out.text(f"  input:    {orjson.dumps(event_doc(found.event)).decode()}")
    out.text(f"  recorded: {found.expected.describe(sent)}" + (f"  at {at}" if at else ""))
    if note:
        out.text(f"            {note}")
    out.text(f"  replayed: {found.got.describe(sent)}")
    out.text(f"            {found.note}")


@ops_command
async def replay_history(
    settings: OrchestratorSettings,
    out: Output,
    definition: str | None = typer.Option(
        None, "--definition", help="<module>:<NAME> of the definition to replay under."
    ),
    history: str | None = typer.Option(
        None, "--history", help="A saga id (read from Redis) or a golden history file."
    ),
    export: str | None = typer.Option(
        None, "--export", help="Write this saga's history as a golden file, to stdout."
    ),
) -> None:
    """Re-run a recorded history through decide() under a definition and report the first
    input decided differently (exit 1), or none (exit 0)."""
    if (history is None) == (export is None):
        raise InputError(
            "give --history <saga id | file> (with --definition) to replay, or --export <saga id>"
        )
    d = load_definition(definition) if definition else None
    if export is not None:
        h, own = await _from_redis(settings, validate.saga_id(export), d)
        own = own or d
        if own is None:
            raise InputError(
                f"saga {export} is {h.saga_type} v{h.definition_version}, which is not in "
                "SAGA_SAGA_MODULES here: name that version with --definition <module>:<NAME>"
            )
        typer.echo(export_lines(with_steps(h, own)), nl=False)
        return
    assert history is not None
    if d is None:
        raise InputError("--definition <module>:<NAME> is required: the definition to replay under")
    if _is_file(history):
        h = _read(history)
    else:
        h, _ = await _from_redis(settings, history, d)
    found = replay(d, h.inputs)
    _report(out, h, d, found)
    if found is not None:
        raise typer.Exit(1)
