"""scripts/bench: a quick run reports every figure as a number and leaves nothing behind; bad
options are one clear error; the memory count finds a saga's keys by its id alone.

No test here asserts a speed or a time: the machine is shared and the figures are indicative.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from infra import redis as redis_factory
from schemas.config import Settings
from scripts.bench import parse_args
from scripts.bench_kit import memory, report
from tests.conftest import ROOT, Infra

BENCH = str(ROOT / "scripts" / "bench")
EXTERNAL = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL"))
#: the figures the throughput and scale-out issues ask `--json` for
REQUIRED = (
    "sagas_per_s", "steps_per_s", "baseline_steps_per_s", "ratio", "latency_p50_ms",
    "latency_p99_ms", "idle_saga_ms", "resume_after_kill_s", "redis_bytes_per_saga",
    "redis_bytes_per_inflight_saga",
)  # fmt: skip
OWN_PROCESSES = ("orchestrator", "inventory", "payment", "shipping", "notification", "loadgen")


def number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def bench_args(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """The bench's own argument checks, without the wrapper's stack and venv setup."""
    return subprocess.run(
        [sys.executable, "-m", "scripts.bench", *args],
        capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.slow
def test_quick_run_reports_every_field_and_cleans_up(infra: Infra, tmp_path: Path) -> None:
    """`scripts/bench --quick --json F` runs every part (in-flight included) and writes every
    required figure as a number, the CPU of each process, and the settings used; the topics and
    keys it made are gone afterwards."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [BENCH, "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=1500, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    r = orjson.loads(out.read_bytes())
    for key in REQUIRED:
        assert number(r[key]), f"{key} = {r.get(key)!r}"
    assert set(r["parts"]) == {"baseline", "codec", "idle", "peak", "open", "kill", "inflight"}
    assert set(r["baselines"]) == {"aiokafka", "confluent"}
    fastest = max(b["steps_per_s"] for b in r["baselines"].values())
    assert r["baseline_steps_per_s"] == round(fastest, 1)
    cpu, per_saga = r["cpu_s_per_process"], r["cpu_us_per_saga"]
    stack = () if EXTERNAL else ("broker", "redis")
    for name in (*OWN_PROCESSES, *stack):
        assert number(cpu[name]) and number(per_saga[name]), (name, cpu, per_saga)
    for client, b in r["baselines"].items():
        for name in ("pinger", "ponger", *stack):
            assert number(b["cpu_s_per_process"][name]), (client, name, b)
            assert number(b["cpu_us_per_step"][name]), (client, name, b)
    s = r["settings"]
    assert s["partitions"] >= 1 and s["in_flight"] == 100 and s["quick"] is True
    assert s["command_topic_mode"] and number(s["baseline_linger_ms"])
    assert number(s["engine"]["batch_max_records"])
    assert not any("password" in k for k in s["engine"]), "secrets stay out of the report"
    assert r["kill"]["unfinished"] == 0 and r["open_loop"]["unfinished"] == 0
    assert r["inflight"]["in_flight"] == 100 and r["inflight"]["sampled"] == 100
    assert r["inflight"]["park"] == "direct" and number(r["inflight"]["redis_used_after"])
    # where the idle saga's time went: the start, then each of the order saga's four steps
    assert number(r["idle"]["start_ms"]) and len(r["idle"]["step_ms"]) == 4
    assert all(number(x) for x in r["idle"]["step_ms"])
    assert "## headline" in proc.stdout and f"wrote {out}" in proc.stdout

    tag = r["tag"]
    client = redis_factory.sync_client(Settings(redis_url=infra.redis_url))
    try:
        assert list(client.scan_iter(match=f"bench{tag}*", count=1000)) == []
    finally:
        client.close()
    topics = AdminClient({"bootstrap.servers": infra.bootstrap}).list_topics(timeout=30).topics
    assert [t for t in topics if t.startswith(f"bench-{tag}-")] == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--only", "bogus"], "unknown bogus"),
        (["--only", ","], "empty list"),
        (["--clients", "kafka-python"], "unknown kafka-python"),
        (["--in-flight", "-1"], "not between 0 and 10,000,000"),
        (["--in-flight", "10000001"], "not between 0 and 10,000,000"),
        (["--in-flight", "1e6"], "not a whole number"),
        (["--window", "0"], "must be at least 1"),
        (["--peak-s", "nan"], "must be a positive number"),
        (["--peak-s", "inf"], "must be a positive number"),
        (["--rate", "-5"], "must be a positive number"),
        (["--load-fraction", "1.5"], "must be at most 1"),
        (["--linger-ms", "5000"], "not between 0 and 1,000"),
        (["--arrivals", "bursty"], "invalid choice"),
        (["--park", "pigeon"], "invalid choice"),
        (["--json", "/nonexistent/dir/out.json"], "no writable directory"),
        (["--json", "."], "is a directory"),
        (["--only", "open"], "add peak, or give --rate"),
        (["--only", "peak", "--skip", "peak"], "leave nothing to run"),
    ],
)
def test_bad_options_are_one_clear_error(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every option is checked before anything starts: exit 2 and one line saying what is
    wrong."""
    with pytest.raises(SystemExit) as exited:
        parse_args(args)
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], errors


def test_bad_option_from_the_command_line_starts_nothing() -> None:
    """The real entry point: exit 2, the error line, no traceback, no run started."""
    proc = bench_args("--window", "-3")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "argument --window: -3 must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr and "# bench run" not in proc.stdout


def test_quick_is_a_preset_that_options_override() -> None:
    """--quick picks small sizes; an option given beside it wins; without a part that runs
    the fleet, nothing is parked."""
    quick, default = parse_args(["--quick"]), parse_args([])
    assert quick.window < default.window and quick.peak_s < default.peak_s
    assert quick.in_flight == 100 and default.in_flight == 0
    assert default.park == "direct" and parse_args(["--park", "kafka"]).park == "kafka"
    assert parse_args(["--quick", "--window", "700"]).window == 700
    assert parse_args(["--quick", "--only", "baseline,codec"]).in_flight == 0
    assert parse_args(["--skip", "kill,open"]).parts == ["baseline", "codec", "idle", "peak"]


def test_headline_of_a_partial_run_is_null_not_missing() -> None:
    """A part that did not run leaves its figures null, so a JSON reader always finds them."""
    h = report.headline({"baselines": {"aiokafka": {"steps_per_s": 100.0}}})
    for key in REQUIRED:
        assert key in h
    assert h["baseline_steps_per_s"] == 100.0 and h["ratio"] is None and h["sagas_per_s"] is None


async def test_memory_finds_a_sagas_keys_by_its_id(settings: Settings) -> None:
    """Keys holding a bench saga id count as that saga's, whatever their shape; shared keys
    count by how much they grew, shared out over the sagas."""
    redis = redis_factory.client(settings, decode=True)
    prefix = settings.key_prefix
    try:
        await redis.hset(f"{prefix}:_offsets:g", mapping={"p0": 1})  # there before: not counted
        before = await memory.shared_bytes(redis, prefix)
        ids = ["peak00000001", "peak00000002"]
        for sid in ids:
            await redis.hset(f"{prefix}:{sid}", mapping={"state": "completed", "data": "x" * 50})
            await redis.xadd(f"{prefix}:{{p3}}:{sid}:h", {"at": "1"})  # another layout's shape
            await redis.zadd(f"{prefix}:_index:completed", {sid: 1})
        await redis.set(f"{prefix}:idle00000009", "another saga's key, not sampled")
        got = await memory.per_saga(redis, prefix, ids, before, sample_n=10)

        async def usage(key: str) -> int:
            return int(await redis.memory_usage(key, samples=0) or 0)

        own = [await usage(f"{prefix}:{s}") + await usage(f"{prefix}:{{p3}}:{s}:h") for s in ids]
        shared = await usage(f"{prefix}:_index:completed") / len(ids)
        assert got["keys_per_saga"] == 2 and got["sampled"] == 2
        assert got["own_keys_bytes"] == round(sum(own) / len(own))
        assert got["shared_keys_bytes"] == round(shared)
        assert got["bytes_per_saga"] == round(sum(own) / len(own) + shared)
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.unlink(key)
        await redis.aclose()
