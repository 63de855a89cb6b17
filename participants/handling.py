"""One command's outcome: answered from the stored records, or run through the participant's
middleware and handler and stored by the guard (with the handler's effect)."""

from __future__ import annotations

import logging
import random
from functools import partial
from typing import Any

from infra.crashpoints import crash_point
from infra.retry import Stopped
from participants.context import BatchScope, Context, command_logger
from participants.errors import classify, is_infrastructure
from participants.middleware import run_chain
from participants.outcome import Outcome, check_result
from participants.participant import Participant, Registration
from participants.runtime import Infra, WorkerStats
from participants.store import Known, Store
from schemas.config import Settings
from schemas.messages import SagaCommand

Log = logging.LoggerAdapter[Any]


def _not_a_failure(exc: BaseException) -> bool:
    """Not a verdict on the command: an outage (retried in place) or a stop."""
    return is_infrastructure(exc) or isinstance(exc, Stopped)


class CommandRunner:
    def __init__(
        self,
        settings: Settings,
        participant: Participant,
        store: Store,
        infra: Infra,
        stats: WorkerStats,
        rng: random.Random,
        log: logging.Logger,
    ) -> None:
        self.settings, self.participant, self.store = settings, participant, store
        self.infra, self.stats, self.rng, self.log = infra, stats, rng, log

    async def one(self, cmd: SagaCommand, known: Known, batch: BatchScope) -> Outcome | None:
        """The outcome to reply with, or None to send no reply."""
        log = command_logger(self.log, cmd)
        try:
            if known.outcome is not None:
                self.stats.replayed += 1
                log.info(
                    "%s seen before: re-sending its stored %s reply",
                    cmd.message_id,
                    known.outcome.kind,
                )
                return known.outcome
            if known.settled:
                self.stats.replayed += 1
                outcome = await self.infra.retry("settle", partial(self.store.settle, cmd))
                log.info(
                    "%s answered without running: %s %s",
                    cmd.message_id,
                    outcome.kind,
                    outcome.reason,
                )
                return outcome
            reg = self.participant.handler_for(cmd)
            if reg is None:
                what = "compensation" if cmd.compensation else "action"
                reason = f"{self.participant.name} has no {what} handler for {cmd.command_type}"
                log.warning("%s", reason)
                return await self._fail(cmd, False, reason)
            self.stats.handled += 1
            stored, reply = await self.infra.retry(
                "middleware", partial(self._new, cmd, reg, log, batch)
            )
            crash_point("participant.after_effect")
            if stored is None:
                self.stats.swallowed += 1
                log.info("%s swallowed by a middleware: nothing stored, no reply", cmd.message_id)
                return None
            self._record(cmd, stored, log)
            if reply is None:
                self.stats.swallowed += 1
                log.info("%s handled, reply dropped by a middleware", cmd.message_id)
            return reply
        except Stopped:
            raise
        except Exception:
            # A bug in the SDK or a broken script: never take the worker down for one command.
            # It gets no reply; the orchestrator's timeout retries it.
            self.stats.errors += 1
            log.exception("%s could not be processed", cmd.message_id)
            return None

    async def _new(
        self, cmd: SagaCommand, reg: Registration, log: Log, batch: BatchScope
    ) -> tuple[Outcome | None, Outcome | None]:
        """(the stored outcome, the reply) of a new command run through the middleware."""
        ctx = Context(
            participant=self.participant.name,
            settings=self.settings,
            redis=self.store.redis,
            log=log,
            run_guarded=partial(self.store.guarded, cmd),
            batch=batch,
            rng=self.rng,
        )
        stored: list[Outcome] = []

        async def call_handler() -> Outcome:
            if stored:
                raise RuntimeError("call_next() runs the handler once per command")
            queued = ctx.tx  # what the middleware queued, applied with the handler's writes

            async def attempt() -> Outcome:
                ctx.tx, ctx.committed = queued.copy(), None
                return await self._run_handler(reg, cmd, ctx)

            stored.append(await self.infra.retry("handle", attempt))
            return stored[0]

        try:
            reply = await run_chain(self.participant.middleware, cmd, ctx, call_handler)
        except Exception as exc:
            if _not_a_failure(exc):
                raise
            # A middleware failed the command: stored and answered like a handler's failure.
            failed = await self._fail(cmd, *classify(exc))
            return failed, failed
        if reply is not None and (not stored or reply is not stored[0]):
            raise TypeError("a middleware returned something other than call_next()'s outcome")
        return (stored[0] if stored else None), reply

    async def _run_handler(self, reg: Registration, cmd: SagaCommand, ctx: Context) -> Outcome:
        try:
            result = check_result(await reg.handler(cmd, ctx))
            if ctx.committed is None:
                return await self.store.commit(cmd, result, ctx.tx)
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            if ctx.committed is None:
                retryable, reason = classify(exc)
                return await self.store.commit_failure(cmd, retryable, reason)
        assert ctx.committed is not None
        return ctx.committed

    async def _fail(self, cmd: SagaCommand, retryable: bool, reason: str) -> Outcome:
        """Store a failure the handler did not produce (retried in place while Redis is away)."""
        return await self.infra.retry(
            "store", partial(self.store.commit_failure, cmd, retryable, reason)
        )

    def _record(self, cmd: SagaCommand, outcome: Outcome, log: Log) -> None:
        self.stats.outcomes[outcome.kind] = self.stats.outcomes.get(outcome.kind, 0) + 1
        if outcome.kind == "failed":
            log.warning(
                "%s %s failed (retryable=%s): %s",
                cmd.command_type,
                cmd.message_id,
                outcome.retryable,
                outcome.reason,
            )
        else:
            log.debug("%s %s %s %s", cmd.command_type, cmd.message_id, outcome.kind, outcome.result)
