"""The SDK's Redis bookkeeping: what a batch already knows about its commands, and the guarded
write that stores an outcome (together with the handler's effect)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from redis.asyncio import Redis

from participants.context import Effects, Scalar
from participants.keys import SdkKeys, tagged
from participants.outcome import Outcome
from participants.scripts import COMMIT, LOOKUP, Coalescer, GuardedScript, ScriptCache
from schemas.messages import SagaCommand


@dataclass(frozen=True)
class Known:
    """What Redis knew about a command when its batch started."""

    outcome: Outcome | None
    done: bool
    tombstone: bool

    @property
    def settled(self) -> bool:
        """The guard can answer without running the handler (re-send, repeat, or refuse)."""
        return self.outcome is not None or self.done or self.tombstone


#: How the guard meets a fetched batch (`WorkerOptions.guard`, `SAGA_PARTICIPANT_GUARD`):
#: `batched` reads what is known about all of its commands with one script call and sends the
#: commits made together in one round trip; `per-command` reads three keys per command and sends
#: every commit alone (for measuring the difference: scripts/worker_cpu.py).
GUARD_MODES = ("batched", "per-command")
#: commands per lookup script call: a script holds Redis alone while it runs, so a batch of
#: thousands is read by several calls (still one round trip), a millisecond or so each
LOOKUP_CHUNK = 500


class Store:
    def __init__(self, redis: Redis, keys: SdkKeys, ttl_s: int, mode: str = "batched") -> None:
        if mode not in GUARD_MODES:
            raise ValueError(f"guard mode {mode[:40]!r}: use one of {', '.join(GUARD_MODES)}")
        self.redis = redis
        # A cluster client gets the cluster layout, whoever built the keys: the guard's three
        # keys and the handler's must share a slot (participants.keys).
        self.keys = replace(keys, cluster=True) if tagged(redis) else keys
        self.ttl_s = ttl_s
        self.batched = mode == "batched"
        self.scripts = ScriptCache(redis)
        self.coalescer = Coalescer(redis, coalesce=self.batched)
        # Lookups made together (a batch's chunks; the reactor's one event at a time, from many
        # sagas at once) leave together too.
        self.reads = Coalescer(redis, commits=False)
        self._lookup = self.scripts.get(LOOKUP)

    async def lookup(self, commands: Sequence[SagaCommand]) -> list[Known]:
        """What Redis knows about each command of a batch (its stored outcome, done record and
        tombstone), in one round trip: one script call for the whole batch, or (per-command
        mode) three reads per command in one pipeline."""
        if not commands:
            return []
        if not self.batched:
            return await self._lookup_each(commands)
        chunks = [commands[i : i + LOOKUP_CHUNK] for i in range(0, len(commands), LOOKUP_CHUNK)]
        calls = [
            (self._lookup, [k for cmd in chunk for k in self._guard_keys(cmd)], ())
            for chunk in chunks
        ]
        answers = await asyncio.gather(
            *(self.reads.call(*c) for c in calls), return_exceptions=True
        )
        known: list[Known] = []
        for chunk, answer in zip(chunks, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            if not isinstance(answer, list) or len(answer) != len(chunk):
                raise RuntimeError(f"lookup.lua answered {str(answer)[:100]!r}")
            known += [_known(cmd, a) for cmd, a in zip(chunk, answer, strict=True)]
        return known

    async def _lookup_each(self, commands: Sequence[SagaCommand]) -> list[Known]:
        pipe = self.redis.pipeline(transaction=False)
        for cmd in commands:
            pipe.get(self.keys.outcome(cmd.message_id))
            pipe.exists(self.keys.done(cmd.saga_id, cmd.step, cmd.compensation))
            pipe.exists(self.keys.tombstone(cmd.saga_id, cmd.step))
        replies = await pipe.execute()
        known = []
        for i in range(len(commands)):
            raw, done, tomb = replies[3 * i : 3 * i + 3]
            known.append(
                Known(
                    outcome=Outcome.from_json(raw) if raw else None,
                    done=bool(done),
                    # A tombstone refuses forward actions only; compensations run regardless.
                    tombstone=bool(tomb) and not commands[i].compensation,
                )
            )
        return known

    def _guard_keys(self, cmd: SagaCommand) -> list[str]:
        """guard.lua's KEYS[1..3] for a command (and lookup.lua's three for it)."""
        return [
            self.keys.outcome(cmd.message_id),
            self.keys.done(cmd.saga_id, cmd.step, cmd.compensation),
            self.keys.tombstone(cmd.saga_id, cmd.step),
        ]

    async def guarded(
        self, cmd: SagaCommand, script: GuardedScript, keys: Sequence[str], args: Sequence[Scalar]
    ) -> Outcome:
        guard_keys = self._guard_keys(cmd)
        guard_args: list[Scalar] = ["1" if cmd.compensation else "0", self.ttl_s]
        status_and_outcome = await self.coalescer.call(
            self.scripts.get(script.source), [*guard_keys, *keys], [*guard_args, *args]
        )
        return Outcome.from_json(status_and_outcome[1])

    async def commit(self, cmd: SagaCommand, result: dict[str, str], effects: Effects) -> Outcome:
        """Store a successful handler's result and apply its queued writes, atomically."""
        spec = orjson.dumps({"result": result, "ops": effects.ops}).decode()
        return await self.guarded(cmd, COMMIT, effects.keys, [spec])

    async def commit_failure(self, cmd: SagaCommand, retryable: bool, reason: str) -> Outcome:
        """Store a failure (nothing else is written; a tombstone still is, for a compensation)."""
        spec = orjson.dumps({"fail": ["1" if retryable else "0", reason]}).decode()
        return await self.guarded(cmd, COMMIT, [], [spec])

    async def settle(self, cmd: SagaCommand) -> Outcome:
        """Let the guard answer a command `Known.settled` says it can answer alone. Goes through
        the guard (not straight to the stored values) so a refusal or repeat is stored under this
        command id too, and a re-delivery of it is a plain duplicate. Should the record have
        expired in between, the guard reaches the body, which reports a retryable failure."""
        return await self.commit_failure(cmd, True, "the step's stored outcome expired; retry")


def _known(cmd: SagaCommand, answer: Any) -> Known:
    """lookup.lua's element for one command: the stored outcome's text (which settles the
    command alone, so its done record and tombstone are not read), or 1 (done) + 2 (tombstone)."""
    if isinstance(answer, str | bytes):
        return Known(Outcome.from_json(answer), done=False, tombstone=False)
    flags = int(answer)
    # A tombstone refuses forward actions only; compensations run regardless.
    return Known(None, done=bool(flags & 1), tombstone=bool(flags & 2) and not cmd.compensation)
