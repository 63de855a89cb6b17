"""Plumbing shared by the `saga` operations commands: connection flags injected into every
command, settings built from them (else `SAGA_*` environment variables, else `.env`), the
async body run, and every error turned into one line on stderr and a meaningful exit code."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from redis.exceptions import RedisError

from infra import redis as redis_factory
from orchestrator.config import OrchestratorSettings
from orchestrator.engine.keys import Keys
from orchestrator.engine.sagas import load_registry
from orchestrator.errors import ConfigError
from orchestrator.ops import InputError, OpsError
from orchestrator.ops.query import SagaQuery
from orchestrator.ops.render import Output

_CONN = (
    ("kafka", "--kafka", "Kafka bootstrap servers (SAGA_KAFKA_BOOTSTRAP_SERVERS).", str | None),
    ("redis_url", "--redis", "Redis URL (SAGA_REDIS_URL).", str | None),
    ("key_prefix", "--prefix", "Redis key prefix (SAGA_KEY_PREFIX).", str | None),
    ("commands_topic", "--commands-topic", "SAGA_COMMANDS_TOPIC.", str | None),
    ("events_topic", "--events-topic", "SAGA_EVENTS_TOPIC.", str | None),
    ("dlq_topic", "--dlq-topic", "SAGA_DLQ_TOPIC.", str | None),
)
_INFRA = (RedisError, KafkaError, OSError, TimeoutError)


def _injected() -> list[inspect.Parameter]:
    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, flag, help=text, show_default=False),
            annotation=kind,
        )
        for name, flag, text, kind in _CONN
    ]
    params.append(
        inspect.Parameter(
            "as_json",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(False, "--json", help="Machine-readable JSON output."),
            annotation=bool,
        )
    )
    return params


def build_settings(**flags: Any) -> OrchestratorSettings:
    values = {k: v for k, v in flags.items() if v is not None}
    if "kafka" in values:
        values["kafka_bootstrap_servers"] = values.pop("kafka")
    try:
        return OrchestratorSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(f"invalid setting {where}: {err['msg']}") from None


def ops_command(fn: Callable[..., Any]) -> Callable[..., None]:
    """Add the connection options and `--json`, build settings, run the (async) body, and turn
    every error into one line on stderr and a meaningful exit code."""
    sig = inspect.signature(fn, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name not in ("settings", "out")]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        flags = {name: kwargs.pop(name) for name, *_ in _CONN}
        out = Output(kwargs.pop("as_json"))
        try:
            settings = build_settings(**flags)
            result = fn(settings=settings, out=out, **kwargs)
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except OpsError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except _INFRA as exc:
            typer.echo(
                f"error: Kafka or Redis did not answer: {type(exc).__name__}: {exc}", err=True
            )
            raise typer.Exit(1) from None

    wrapper.__signature__ = sig.replace(parameters=own + _injected())  # type: ignore[attr-defined]
    return wrapper


@contextlib.asynccontextmanager
async def saga_query(settings: OrchestratorSettings) -> AsyncIterator[SagaQuery]:
    registry = load_registry(settings.saga_modules)
    async with redis_factory.connected(settings) as redis:
        yield SagaQuery(redis, Keys.of(settings), registry)
