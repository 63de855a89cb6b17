"""Saga modules: how saga types (and the messages that start them) reach the daemon.

A saga module is any importable Python module named in `SAGA_SAGA_MODULES` (a JSON list, e.g.
'["mycompany.sagas"]'). It exposes:

    SAGAS        list[SagaDefinition]                      required: the saga types
    STARTS       {message class: fn(msg) -> (type, data)}  optional: start messages besides
                                                           StartSaga (e.g. StartOrder)
    HTTP_ROUTES  list[orchestrator.ops.http.Route]        optional: extra HTTP API routes

The default names the shipped order saga (`participants.samples.order.saga`); naming your own
modules replaces it, so only your saga types are registered. The engine never imports a sample:
it imports whatever the setting names, exactly as it imports a user's module.

Every definition is checked here, at load, against the wire contract (`schemas.messages`): each
message the daemon will ever build from it (the commands, their timers, and the replies it must
accept) is built once with the extremes (the longest saga id, the last attempt) and validated.
A definition that would fail later, in the loop, is a `ConfigError` now: one line naming the
module, the saga, the step and the field.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from orchestrator.core.definition import Registry, SagaDefinition, StepDef
from orchestrator.core.model import command_id, timer_member
from orchestrator.errors import ConfigError
from schemas.messages import Envelope, Name, SagaCommand, StepFailed, TimerFired

#: the longest saga id `schemas.messages.SagaId` accepts (a test pins it): the ids derived from
#: it (commands, replies, timers) must still fit the wire's limits
LONGEST_SAGA_ID = "x" * 128
_NAME: TypeAdapter[str] = TypeAdapter(Name)

#: maps a start message to (saga type, saga data)
StartMapper = Callable[[Envelope], tuple[str, dict[str, Any]]]


@dataclass
class SagaModules:
    """What the configured saga modules provide, merged."""

    registry: Registry = field(default_factory=Registry)
    starts: dict[type[Envelope], StartMapper] = field(default_factory=dict)
    http_routes: list[Any] = field(default_factory=list)


def load_sagas(modules: list[str]) -> SagaModules:
    """Import every saga module; a module that cannot be used is a `ConfigError`."""
    out = SagaModules()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # any error in a user's module is a configuration error
            raise ConfigError(
                f"saga module {name!r} cannot be imported: {type(exc).__name__}: {exc}"
            ) from exc
        sagas = getattr(module, "SAGAS", None)
        if not isinstance(sagas, list | tuple) or not all(
            isinstance(s, SagaDefinition) for s in sagas
        ):
            raise ConfigError(f"saga module {name!r} must define SAGAS, a list of SagaDefinition")
        for s in sagas:
            check_definition(name, s)
            out.registry.register(s)
        starts = getattr(module, "STARTS", {})
        if not isinstance(starts, dict) or not all(
            isinstance(k, type) and issubclass(k, Envelope) and callable(v)
            for k, v in starts.items()
        ):
            raise ConfigError(f"saga module {name!r}: STARTS must map message classes to functions")
        out.starts.update(starts)
        routes = getattr(module, "HTTP_ROUTES", [])
        if not isinstance(routes, list | tuple):
            raise ConfigError(f"saga module {name!r}: HTTP_ROUTES must be a list of Route")
        out.http_routes.extend(routes)
    return out


def check_definition(module: str, definition: SagaDefinition) -> None:
    """`ConfigError` when a message built from `definition` would break the wire contract."""
    where = f"saga module {module!r}: saga {definition.name!r}"
    # Names are checked as they are: the messages strip whitespace, which would make a reply's
    # step or a command's routing header differ from the definition's.
    _check_name(f"{where}, field name", definition.name)
    where += f" version {definition.version}"
    for step in definition.steps:
        at = f"{where}, step {step.name!r}, field"
        if step.is_wait:
            # a wait step sends nothing: only its name and its timeout timer reach the wire
            _check_name(f"{at} name", step.name)
            _check_wait_timer(definition.name, step, at)
            continue
        for name in ("name", "participant", "action", "compensation"):
            _check_name(f"{at} {name}", getattr(step, name))
        for compensation in (False, True):
            try:
                _build_messages(definition.name, step, compensation)
            except ValidationError as exc:
                name, value = _field(exc, step, compensation)
                raise ConfigError(f"{at} {name}: {_problem(exc, value)}") from None


def _check_name(where: str, value: object) -> None:
    try:
        _NAME.validate_python(value, strict=True)
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "string_pattern_mismatch":
            raise ConfigError(f"{where}: {_problem(exc, value)}") from None
        pattern = exc.errors()[0].get("ctx", {}).get("pattern", "")
        raise ConfigError(
            f"{where}: {_shown(value)} does not match the wire pattern {pattern} (a letter, then "
            "up to 63 letters, digits, '_', '.' or '-')"
        ) from None


def _build_messages(saga_type: str, step: StepDef, compensation: bool) -> None:
    """Every message of one step and direction, at its last attempt and for the longest saga
    id, as the daemon builds it (commands, timers) or must accept it (replies)."""
    policy = step.compensation_retry if compensation else step.retry
    kind = step.compensation if compensation else step.action
    attempt = policy.max_attempts
    sid = LONGEST_SAGA_ID
    cid = command_id(sid, step.name, compensation, attempt)
    common: dict[str, Any] = {
        "saga_id": sid,
        "saga_type": saga_type,
        "step": step.name,
        "attempt": attempt,
        "compensation": compensation,
    }
    SagaCommand.model_validate(
        {**common, "message_id": cid, "participant": step.participant, "command_type": kind}
    )
    StepFailed.model_validate(
        {
            **common,
            "message_id": f"{cid}:reply",
            "command_id": cid,
            "command_type": kind,
            "retryable": False,
            "reason": "",
        }
    )
    for timer in ("timeout", "retry"):
        member = timer_member(sid, timer, step.name, attempt, compensation)
        TimerFired.model_validate({**common, "message_id": f"timer|{member}", "timer_kind": timer})


def _check_wait_timer(saga_type: str, step: StepDef, at: str) -> None:
    """The one message a wait step makes: its timeout timer (attempt 1, no retries)."""
    member = timer_member(LONGEST_SAGA_ID, "timeout", step.name, 1, False)
    fired: dict[str, Any] = {"saga_id": LONGEST_SAGA_ID, "saga_type": saga_type, "step": step.name}
    fired |= {"attempt": 1, "compensation": False, "message_id": f"timer|{member}"}
    try:
        TimerFired.model_validate({**fired, "timer_kind": "timeout"})
    except ValidationError as exc:
        name, value = _field(exc, step, False)
        raise ConfigError(f"{at} {name}: {_problem(exc, value)}") from None


def _field(exc: ValidationError, step: StepDef, compensation: bool) -> tuple[str, object]:
    """The definition's field (and its value) behind the first error of a built message."""
    error = exc.errors()[0]
    wire = str(error["loc"][0]) if error["loc"] else "message"
    if wire == "attempt":
        policy = "compensation_retry" if compensation else "retry"
        return f"{policy}.max_attempts", getattr(step, policy).max_attempts
    saga_id = f"a {len(LONGEST_SAGA_ID)}-char saga id"
    return f"name (the {wire} derived from it, with {saga_id})", error.get("input")


def _problem(exc: ValidationError, value: object) -> str:
    return f"{exc.errors()[0]['msg']} (got {_shown(value)})"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def load_registry(modules: list[str]) -> Registry:
    """Only the saga types (queries and the CLI need nothing else)."""
    return load_sagas(modules).registry
