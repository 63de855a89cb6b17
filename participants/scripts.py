"""Lua scripts: loading them from package files and running them inside the SDK's guard."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from infra.crashpoints import crash_point
from infra.redis import is_cluster

_MARKER = "--BODY--"


def read_lua(name: str, package: str = "participants") -> str:
    """The text of `lua/<name>` shipped inside `package`."""
    return resources.files(package).joinpath("lua", name).read_text(encoding="utf-8")


class GuardedScript:
    """A domain Lua body that runs inside the SDK's idempotency guard (`lua/guard.lua`).

    The body sees its own KEYS and ARGV (the guard's are stripped off) and returns
    `{'ok', k1, v1, ...}` (the step's result) or `{'fail', '1'|'0', reason}` (retryable or not).
    Run it from a handler with `await ctx.atomic(script, keys, args)`.
    """

    def __init__(self, body: str, name: str = "custom") -> None:
        self.name = name
        self.source = read_lua("guard.lua").replace(_MARKER, body)

    @classmethod
    def from_package(cls, filename: str, package: str = "participants") -> GuardedScript:
        return cls(read_lua(filename, package), name=filename)

    @classmethod
    def from_file(cls, path: str | Path) -> GuardedScript:
        return cls(Path(path).read_text(encoding="utf-8"), name=Path(path).name)


class ScriptCache:
    """One registered script object per source and client: EVALSHA with a reload on NOSCRIPT."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts: dict[str, AsyncScript] = {}

    def get(self, source: str) -> AsyncScript:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._redis.register_script(source)
        return script


#: a script, its keys and its arguments
ScriptCall = tuple[AsyncScript, Sequence[Any], Sequence[Any]]
Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class Coalescer:
    """Sends the script calls made in one turn of the event loop as one pipeline.

    With dozens of handlers in flight, their guard calls leave together: one round trip and one
    socket write instead of one each, which is most of a worker's cost per command. Each caller
    still gets its own result or exception. Safe to re-send: every script it runs is idempotent
    (the guard answers a repeat with the stored outcome), which is also what makes redis-py's own
    retry of a pipeline after a dropped connection harmless.
    """

    def __init__(self, redis: Redis, coalesce: bool = True, commits: bool = True) -> None:
        self.redis = redis
        #: False: every call is its own round trip (SAGA_PARTICIPANT_GUARD=per-command)
        self.coalesce = coalesce
        #: the calls are guarded commits (the crash point below), not the read-only lookup
        self.commits = commits
        self._pending: list[Call] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def call(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self.coalesce:
            self._launch([(script, keys, args, fut)])
            return fut
        if not self._pending:
            # After the callbacks already due in this turn: the other handlers woken together
            # get to add their calls first.
            loop.call_soon(self._start)
        self._pending.append((script, keys, args, fut))
        return fut

    def _start(self) -> None:
        batch, self._pending = self._pending, []
        self._launch(batch)

    def _launch(self, batch: list[Call]) -> None:
        task = asyncio.create_task(self._flush(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[Call]) -> None:
        try:
            results = await run_scripts(self.redis, [call[:3] for call in batch])
        except asyncio.CancelledError:
            for *_, fut in batch:
                fut.cancel()
            raise
        except Exception as exc:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        # The gap the crash tests aim at: these commits (effects and outcomes) are in Redis,
        # none of their replies is sent, and the batch may have more commits to come.
        if self.commits:
            crash_point("participant.between_commits")
        for (*_, fut), r in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(r, Exception):
                fut.set_exception(r)
            else:
                fut.set_result(r)


async def run_scripts(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run script calls in one round trip; each result, or the exception of its call. A
    restarted or flushed Redis that forgot a script gets it loaded and that call run again."""
    results = await _execute(redis, calls)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
            script.sha = await redis.script_load(script.script)
        again = await _execute(redis, [calls[i] for i in missing])
        for i, r in zip(missing, again, strict=True):
            results[i] = r
    return results


async def _execute(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    cluster = is_cluster(redis)
    for script, keys, args in calls:
        if cluster:
            # redis-py's cluster pipeline has no evalsha(); the command itself routes by its
            # keys (one slot per call: participants.keys), and a master that lacks the
            # script answers NOSCRIPT, handled in `run_scripts` like a restarted Redis.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        else:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
    return list(await pipe.execute(raise_on_error=False))


COMMIT = GuardedScript.from_package("commit.lua")
#: the read-only check of a whole batch (`Store.lookup`); not a guarded body
LOOKUP = read_lua("lookup.lua")
