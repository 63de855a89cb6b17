"""Plain-text tables and JSON for the `saga` operations commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import typer

from orchestrator.core.definition import SagaDefinition, StepDef
from orchestrator.core.model import StepStatus
from orchestrator.ops.dlq import DeadLetter, Replayed
from orchestrator.ops.query import SagaStatus, SagaSummary, Step


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def step_note(sd: StepDef | None, st: Step) -> str:
    """What the definition says about a step that its status alone does not: its parallel
    group, the signals a wait step takes, the condition of a conditional one."""
    if sd is None:
        return ""
    parts = [f"parallel {sd.group}"] if sd.group else []
    if sd.is_wait:
        takes = " or ".join(repr(x) for x in (sd.signal, *sd.reject_signals))
        waiting = st.status == StepStatus.WAITING.value
        parts.append(f"waits for {takes}" if waiting else f"signal {sd.signal!r}")
    if sd.when is not None:
        skipped = st.status == StepStatus.SKIPPED.value
        parts.append(
            f"skipped: not {sd.when.describe()}" if skipped else f"when {sd.when.describe()}"
        )
    return "; ".join(parts)


def step_notes(s: SagaStatus, definition: SagaDefinition | None) -> dict[str, str]:
    """`step_note` of each step, by name (empty without the definition)."""
    defs = {sd.name: sd for sd in definition.steps} if definition else {}
    return {st.name: step_note(defs.get(st.name), st) for st in s.steps}


def _cell(value: Any, limit: int = 80) -> str:
    s = str(value).replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 3] + "..."


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def json(self, doc: Any) -> None:
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())

    def text(self, line: str) -> None:
        typer.echo(line)

    def status(self, s: SagaStatus, definition: SagaDefinition | None = None) -> None:
        """The saga, its steps (with what the definition says of them, when this process has
        it: group, signals waited for, conditions) and its timeline."""
        notes = step_notes(s, definition)
        if self.as_json:
            doc = s.to_json()
            for step in doc["steps"]:
                step["note"] = notes.get(step["name"], "")
            return self.json(doc)
        rows = [
            ("saga", s.saga_id),
            ("type", s.saga_type),
            ("state", s.state),
            ("current step", s.current_step),
            ("version", s.version),
            ("created", s.created_at),
            ("updated", s.updated_at),
            ("in state since", s.state_entered_at),
            ("last error", s.last_error or "-"),
            ("correlation id", s.correlation_id),
            ("traceparent", s.traceparent or "-"),
            ("redis key", s.key),
        ]
        if s.mode:
            rows.insert(2, ("mode", f"{s.mode} (tracked: read-only)"))
        self.text(table(("field", "value"), rows))
        self.text("")
        self.text(
            table(
                ("step", "status", "attempts", "comp. attempts", "error", "note"),
                [
                    (
                        st.name,
                        st.status,
                        st.attempts,
                        st.compensation_attempts,
                        st.error or "-",
                        notes.get(st.name) or "-",
                    )
                    for st in s.steps
                ],
            )
        )
        self.text("")
        self.text(
            table(
                ("at", "input", "outcome", "state", "note"),
                [
                    (
                        h.get("at", ""),
                        h.get("event", ""),
                        h.get("outcome", ""),
                        h.get("state", ""),
                        h.get("note", ""),
                    )
                    for h in s.timeline
                ],
            )
        )

    def sagas(self, items: list[SagaSummary]) -> None:
        if self.as_json:
            return self.json([i.to_json() for i in items])
        if not items:
            return self.text("no sagas")
        self.text(
            table(
                ("saga", "type", "state", "step", "in state since", "idle s", "last error"),
                [
                    (
                        i.saga_id,
                        i.saga_type,
                        i.state,
                        i.current_step or "-",
                        i.state_entered_at,
                        f"{i.idle_s:.0f}",
                        i.last_error or "-",
                    )
                    for i in items
                ],
            )
        )

    def letters(self, items: list[DeadLetter]) -> None:
        if self.as_json:
            return self.json([d.to_json() for d in items])
        if not items:
            return self.text("no dead letters")
        self.text(
            table(
                ("position", "saga", "from", "error", "time", "message"),
                [
                    (
                        d.position,
                        d.saga_id or "-",
                        d.original_position,
                        d.to_json()["errorClass"],
                        d.to_json()["time"],
                        d.to_json()["errorMessage"],
                    )
                    for d in items
                ],
            )
        )

    def letter(self, d: DeadLetter) -> None:
        doc = d.to_json(full=True)
        if self.as_json:
            return self.json(doc)
        headers = doc.pop("headers")
        value = doc.pop("value")
        self.text(table(("field", "value"), list(doc.items())))
        self.text("\nheaders:")
        for k, v in headers.items():
            self.text(f"  {k}: {v}")
        self.text("\nvalue:")
        self.text(value)

    def replayed(self, items: list[Replayed], dry_run: bool) -> None:
        if self.as_json:
            return self.json({"dryRun": dry_run, "records": [r.to_json() for r in items]})
        verb = "would replay" if dry_run else "replayed"
        for r in items:
            doc = r.to_json()
            self.text(
                f"{verb} {doc['position']} -> {doc['sentTo'] or doc['topic']} "
                f"(saga {doc['sagaId'] or '-'}, message id {doc['messageId']})"
            )
        self.text(f"{len(items)} record(s) {verb}")
