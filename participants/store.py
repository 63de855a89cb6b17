"""The SDK's Redis bookkeeping: what a batch already knows about its commands, and the guarded
write that stores an outcome (together with the handler's effect)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson
from redis.asyncio import Redis

from participants.context import Effects, Scalar
from participants.keys import SdkKeys, tagged
from participants.outcome import Outcome
from participants.scripts import COMMIT, Coalescer, GuardedScript, ScriptCache
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


class Store:
    def __init__(self, redis: Redis, keys: SdkKeys, ttl_s: int) -> None:
        self.redis = redis
        # A cluster client gets the cluster layout, whoever built the keys: the guard's three
        # keys and the handler's must share a slot (participants.keys).
        self.keys = replace(keys, cluster=True) if tagged(redis) else keys
        self.ttl_s = ttl_s
        self.scripts = ScriptCache(redis)
        self.coalescer = Coalescer(redis)

    async def lookup(self, commands: Sequence[SagaCommand]) -> list[Known]:
        """One round trip for the whole batch: each command's stored outcome, done record and
        tombstone."""
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

    async def guarded(
        self, cmd: SagaCommand, script: GuardedScript, keys: Sequence[str], args: Sequence[Scalar]
    ) -> Outcome:
        guard_keys = [
            self.keys.outcome(cmd.message_id),
            self.keys.done(cmd.saga_id, cmd.step, cmd.compensation),
            self.keys.tombstone(cmd.saga_id, cmd.step),
        ]
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
