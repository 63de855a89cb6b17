"""Lua scripts: loading them from package files and running them inside the SDK's guard."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

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


COMMIT = GuardedScript.from_package("commit.lua")
FAULT_TAKE = read_lua("fault_take.lua")
