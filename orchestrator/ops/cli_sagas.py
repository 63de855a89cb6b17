"""`saga` commands for operating sagas: status, list, stuck, retry, abort, resume,
skip-compensation, signal, replay (`replay_cli`), and `saga dlq list|show|replay`. (Starting
sagas is the saga modules' own business: the order sample adds `saga start-order` as a CLI plug-in.)

Each command builds settings (flags, else `SAGA_*` environment variables, else `.env`) and calls
one function of `orchestrator.ops`. Output is a table for people, `--json` for scripts. Exit
codes: 0 done, 1 unknown saga / refused / infrastructure unreachable, 2 bad input.
"""

from __future__ import annotations

import asyncio

import typer

from orchestrator.config import OrchestratorSettings
from orchestrator.ops import InputError, dlq, intervene, kafka, signals, validate
from orchestrator.ops.command import ops_command, saga_query
from orchestrator.ops.query import now_ms
from orchestrator.ops.render import Output
from orchestrator.ops.replay_cli import replay_history

dlq_app = typer.Typer(help="Inspect and replay the dead-letter topic.", no_args_is_help=True)

# ---- starting and reading ---------------------------------------------------------------------


@ops_command
async def status(
    settings: OrchestratorSettings,
    out: Output,
    saga_id: str = typer.Argument(..., help="The saga id."),
) -> None:
    """State, steps and the timeline (the history) of one saga."""
    sid = validate.saga_id(saga_id)
    async with saga_query(settings) as q:
        t = await signals.target(q, sid)
        out.status(t.status, t.definition)


@ops_command
async def list_sagas(
    settings: OrchestratorSettings,
    out: Output,
    state: list[str] | None = typer.Option(None, "--state", help="Repeatable; default: all."),
    saga_type: str | None = typer.Option(None, "--type"),
    older_than: str | None = typer.Option(
        None, "--older-than", help="In the state longer, e.g. 10m."
    ),
    limit: int = typer.Option(100, "--limit", min=1, max=100_000),
) -> None:
    """Sagas by state (oldest in their state first)."""
    states = [validate.state(s) for s in state] if state else None
    bound = validate.duration_ms(older_than) if older_than else 0
    async with saga_query(settings) as q:
        out.sagas(await q.find(states, saga_type, bound, limit))


@ops_command
async def stuck(
    settings: OrchestratorSettings,
    out: Output,
    older_than: str = typer.Option("10m", "--older-than", help="No progress for longer than this."),
    limit: int = typer.Option(1000, "--limit", min=1, max=100_000),
) -> None:
    """Sagas not final and without any progress for longer than the bound."""
    bound = validate.duration_ms(older_than)
    async with saga_query(settings) as q:
        out.sagas(await q.stuck(bound, limit))


# ---- manual intervention ----------------------------------------------------------------------


async def _intervene(
    settings: OrchestratorSettings,
    out: Output,
    saga_id: str,
    action: intervene.Action,
    step: str | None,
    reason: str,
    operator: str | None,
    wait_s: float,
) -> None:
    sid = validate.saga_id(saga_id)
    async with saga_query(settings) as q:
        before = await q.status(sid)
        msg = intervene.command(before, action, step=step, reason=reason, operator=operator)
        async with kafka.producer(settings) as p:
            await kafka.send(p, settings.events_topic, msg, settings.output_format)
        after = before
        if wait_s > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while after.version == before.version and loop.time() < deadline:
                await asyncio.sleep(0.1)  # polling Redis for the daemon's write, with a deadline
                after = await q.status(sid)
    doc = {
        "sagaId": sid,
        "action": action,
        "messageId": msg.message_id,
        "state": after.state,
        "applied": after.version != before.version,
    }
    if out.as_json:
        out.json(doc)
    elif wait_s > 0 and not doc["applied"]:
        out.text(f"sent {action} for {sid}; not applied within {wait_s:g}s (state {after.state})")
    else:
        tail = f"; saga is now {after.state}" if doc["applied"] else ""
        out.text(f"sent {action.replace('_', '-')} for {sid} (message id {msg.message_id}){tail}")


_OPERATOR = typer.Option(None, "--operator", help="Who acts (default: the login name).")
_WAIT = typer.Option(0.0, "--wait", min=0, max=3600, help="Seconds to wait for it to apply.")
_ID = typer.Argument(..., help="The saga id.")


@ops_command
async def retry(
    settings: OrchestratorSettings,
    out: Output,
    saga_id: str = _ID,
    reason: str = typer.Option("", "--reason"),
    operator: str | None = _OPERATOR,
    wait: float = _WAIT,
) -> None:
    """Re-issue the current step (going forward) or the current compensation (going back)."""
    await _intervene(settings, out, saga_id, "retry", None, reason, operator, wait)


@ops_command
async def abort(
    settings: OrchestratorSettings,
    out: Output,
    saga_id: str = _ID,
    reason: str = typer.Option("", "--reason"),
    operator: str | None = _OPERATOR,
    wait: float = _WAIT,
) -> None:
    """Stop going forward and compensate the finished steps now."""
    await _intervene(settings, out, saga_id, "abort", None, reason, operator, wait)


@ops_command
async def resume(
    settings: OrchestratorSettings,
    out: Output,
    saga_id: str = _ID,
    reason: str = typer.Option("", "--reason"),
    operator: str | None = _OPERATOR,
    wait: float = _WAIT,
) -> None:
    """Leave needs_intervention once the cause is fixed: the compensation is issued again."""
    await _intervene(settings, out, saga_id, "resume", None, reason, operator, wait)


@ops_command
async def skip_compensation(
    settings: OrchestratorSettings,
    out: Output,
    saga_id: str = _ID,
    step: str = typer.Option(..., "--step", help="The step compensated."),
    reason: str = typer.Option(..., "--reason", help="What was done."),
    operator: str | None = _OPERATOR,
    wait: float = _WAIT,
) -> None:
    """Record a compensation done by hand (with the reason, in the history) and go on."""
    await _intervene(settings, out, saga_id, "skip_compensation", step, reason, operator, wait)


@ops_command
async def signal(
    settings: OrchestratorSettings,
    out: Output,
    saga_id: str = _ID,
    name: str = typer.Argument(..., help="The signal's name, e.g. approve or reject."),
    data: str | None = typer.Option(
        None, "--data", help='A JSON object, e.g. \'{"approver":"alice"}\': the step\'s result.'
    ),
    reason: str = typer.Option("", "--reason", help="Why; kept in the data as `reason`."),
    operator: str | None = _OPERATOR,
    force: bool = typer.Option(
        False, "--force", help="Send it even though the saga does not wait for it now."
    ),
    wait: float = _WAIT,
) -> None:
    """Send a signal to a saga waiting for one (an approval, say); checked first: the saga
    must exist and one of its steps must wait for this signal (--force sends it anyway, and
    the orchestrator records the refusal in the saga's history)."""
    sid, sig = validate.saga_id(saga_id), signals.name(name)
    doc = signals.data_text(data, reason)
    async with saga_query(settings) as q:
        t = await signals.target(q, sid)
        why = await signals.refusal(q, t, sig)
        if why and not force:
            raise signals.refused(t, sig, why)
        msg = signals.message(t.status, sig, doc, operator)
        async with kafka.producer(settings) as p:
            await kafka.send(p, settings.events_topic, msg, settings.output_format)
        entry: dict[str, str] = {}
        if wait > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while not entry and loop.time() < deadline:
                await asyncio.sleep(0.1)  # polling Redis for the daemon's write, with a deadline
                timeline = (await q.status(sid)).timeline
                entry = next((h for h in timeline if h.get("input") == msg.message_id), {})
    doc_out = {
        "sagaId": sid,
        "signal": sig,
        "messageId": msg.message_id,
        "forced": bool(why),
        "refusedBeforeSending": why,
        "outcome": entry.get("outcome", ""),
        "state": entry.get("state", t.status.state),
        "note": entry.get("note", ""),
    }
    if out.as_json:
        out.json(doc_out)
        return
    if why:
        out.text(f"warning: saga {sid} is not waiting for signal {sig!r} ({why}); sent anyway")
    line = f"sent signal {sig} to {sid} (message id {msg.message_id})"
    if wait > 0 and not entry:
        line += f"; not recorded within {wait:g}s"
    elif entry:
        line += f"; {entry.get('outcome', '')}: {entry.get('note', '')}"
    out.text(line)


# ---- dead letters -----------------------------------------------------------------------------


def _filter(reason: str | None, since: str | None, saga: str | None) -> dlq.Filter:
    return dlq.Filter(
        reason=reason,
        since_ms=validate.since_ms(since, now_ms()) if since else None,
        saga=validate.saga_id(saga) if saga else None,
    )


_REASON = typer.Option(None, "--reason", help="Error class or message contains this.")
_SINCE = typer.Option(None, "--since", help="Dead-lettered within (1h) or after (ISO time).")
_SAGA = typer.Option(None, "--saga", help="Only this saga id.")


@ops_command
async def dlq_list(
    settings: OrchestratorSettings,
    out: Output,
    reason: str | None = _REASON,
    since: str | None = _SINCE,
    saga: str | None = _SAGA,
) -> None:
    """Dead letters with their reason, oldest first per partition."""
    flt = _filter(reason, since, saga)
    out.letters(await dlq.read(settings, flt))


@ops_command
async def dlq_show(
    settings: OrchestratorSettings,
    out: Output,
    position: str = typer.Argument(..., help="<partition>:<offset>"),
) -> None:
    """One dead letter in full: key, value, original and reason headers."""
    partition, offset = validate.position(position)
    out.letter(await dlq.get(settings, partition, offset))


@ops_command
async def dlq_replay(
    settings: OrchestratorSettings,
    out: Output,
    position: str | None = typer.Argument(None, help="<partition>:<offset> of one record."),
    reason: str | None = _REASON,
    since: str | None = _SINCE,
    saga: str | None = _SAGA,
    replay_all: bool = typer.Option(False, "--all", help="Every record (no filter)."),
    value_file: str | None = typer.Option(
        None, "--value-file", help="Replace the value (one record)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be sent; send nothing."),
    rate: float | None = typer.Option(None, "--rate", help="At most N records per second."),
) -> None:
    """Put dead letters back on their original topic; safe to run twice (deduplicated by id)."""
    pos = validate.position(position) if position else None
    flt = _filter(reason, since, saga)
    if rate is not None and not 0 < rate <= 100_000:
        raise InputError("--rate must be a number of records per second in (0, 100000]")
    value = None
    if value_file is not None:
        value = validate.read_file(value_file, settings.max_message_bytes)
        validate.json_object(value, value_file)
        if pos is None:
            raise InputError("--value-file replaces the value of one record: give its position")
    if pos is None and flt.empty and not replay_all:
        raise InputError("say what to replay: a position, --reason/--since/--saga, or --all")
    if pos is not None:
        letters = [await dlq.get(settings, *pos)]
        letters = [d for d in letters if flt.matches(d)]
    else:
        letters = await dlq.read(settings, flt)
    planned = dlq.plan(letters, value)
    if not dry_run and planned:
        async with kafka.producer(settings) as p:
            await dlq.send(p, planned, rate)
    out.replayed(planned, dry_run)


def register(app: typer.Typer) -> None:
    """Mount the operations commands on the `saga` app."""
    app.command("status")(status)
    app.command("list")(list_sagas)
    app.command("stuck")(stuck)
    app.command("retry")(retry)
    app.command("abort")(abort)
    app.command("resume")(resume)
    app.command("skip-compensation")(skip_compensation)
    app.command("signal")(signal)
    app.command("replay")(replay_history)
    dlq_app.command("list")(dlq_list)
    dlq_app.command("show")(dlq_show)
    dlq_app.command("replay")(dlq_replay)
    app.add_typer(dlq_app, name="dlq")
