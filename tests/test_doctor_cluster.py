"""`saga doctor` against the Redis Cluster of `scripts/stack up --redis-cluster`: it says it is
a cluster, that every slot is served and by which masters; a setting that disagrees with the
server, slots no master serves and a CLUSTER SLOTS reply it cannot read are said plainly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis

from orchestrator.ops.doctor import run_doctor
from orchestrator.ops.doctor_cluster import cluster_row, masters_of, uncovered
from schemas.config import Settings
from tests.conftest import ROOT, Infra

SAGA = str(ROOT / ".venv" / "bin" / "saga")


def rows_by_name(rows: list[tuple[str, bool, str]]) -> dict[str, tuple[bool, str]]:
    return {name: (ok, text) for name, ok, text in rows}


def masters_asked_directly(url: str) -> dict[str, int]:
    """Each master's address and its slot count, from CLUSTER NODES (not CLUSTER SLOTS, which
    the doctor reads), so the test does not check the doctor against its own parsing."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        text = client.execute_command("CLUSTER", "NODES")
    finally:
        client.close()
    lines = text.splitlines() if isinstance(text, str) else []
    out: dict[str, int] = {}
    for line in lines:
        fields = line.split()
        if "master" not in fields[2].split(","):
            continue
        count = 0
        for r in fields[8:]:
            start, _, end = r.partition("-")
            count += int(end or start) - int(start) + 1
        out[fields[1].split("@")[0]] = count
    return out


def config_is_ideal(address: str) -> bool:
    host, _, port = address.rpartition(":")
    client = redis.Redis(host=host, port=int(port), decode_responses=True)
    try:
        aof = client.config_get("appendonly").get("appendonly")
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        return bool(aof == "yes" and policy == "noeviction")
    finally:
        client.close()


def on_cluster(settings: Settings, cluster_url: str) -> Settings:
    return settings.model_copy(update={"redis_url": cluster_url, "redis_cluster": True})


def test_names_the_cluster_its_masters_and_full_coverage(
    settings: Settings, cluster_url: str
) -> None:
    """SAGA_REDIS_CLUSTER=true on a healthy cluster: a cluster, all 16384 slots, every master
    with its slot count, and the config check run on each master."""
    rows = rows_by_name(run_doctor(on_cluster(settings, cluster_url)))
    assert rows["redis"][0], rows["redis"][1]
    ok, text = rows["redis cluster"]
    assert ok, text
    assert text.startswith("a Redis Cluster: all 16384 slots served by")
    masters = masters_asked_directly(cluster_url)
    assert len(masters) >= 2 and sum(masters.values()) == 16384, masters
    assert f"by {len(masters)} master(s)" in text
    for address, slots in masters.items():
        assert f"{address} ({slots} slots)" in text, (address, text)
    ok, text = rows["redis config"]
    assert "on every master" in text or not ok, text
    assert ok == all(config_is_ideal(a) for a in masters), text


def test_a_setting_that_disagrees_with_the_server_is_named(
    settings: Settings, cluster_url: str, infra: Infra
) -> None:
    """A cluster node used as a single Redis, and the cluster setting on a single Redis: each a
    failing row saying what to change; the config row is not shown for a setup that is wrong."""
    rows = rows_by_name(run_doctor(settings.model_copy(update={"redis_url": cluster_url})))
    ok, text = rows["redis cluster"]
    assert not ok and "is a node of a Redis Cluster" in text
    assert "set SAGA_REDIS_CLUSTER=true" in text and "MOVED" in text
    assert "redis config" not in rows

    single = settings.model_copy(update={"redis_url": infra.redis_url, "redis_cluster": True})
    rows = rows_by_name(run_doctor(single))
    ok, text = rows["redis cluster"]
    assert not ok and "SAGA_REDIS_CLUSTER=true, but" in text and "is a single Redis" in text


def test_the_single_redis_has_no_cluster_row(settings: Settings) -> None:
    """A single Redis as configured: the rows are the ones the doctor always gave."""
    rows = rows_by_name(run_doctor(settings))
    assert "redis cluster" not in rows and "redis config" in rows


def slots_reply(*ranges: tuple[int, int, int]) -> list[list[object]]:
    """A CLUSTER SLOTS reply: (start, end, port) per range, all on 127.0.0.1."""
    return [[a, b, ["127.0.0.1", port, f"id{port}"]] for a, b, port in ranges]


def test_slots_no_master_serves_are_named() -> None:
    """Gaps at the start, in the middle and at the end are each named, with the masters."""
    masters = masters_of(slots_reply((100, 5000, 7000), (5002, 16000, 7001)))
    assert uncovered(masters) == [(0, 99), (5001, 5001), (16001, 16383)]
    name, ok, text = cluster_row(masters)
    assert name == "redis cluster" and not ok
    assert "not served by any master: 0-99, 5001, 16001-16383" in text
    assert "CLUSTERDOWN" in text and "127.0.0.1:7000 (4901 slots)" in text
    assert cluster_row(masters_of(slots_reply((0, 16383, 7000))))[1]
    assert uncovered({}) == [(0, 16383)]
    assert not cluster_row({})[1]


@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        ("ERR nonsense", "not a list"),
        ([[0, 10]], "is not understood"),
        ([[0, 10, ["127.0.0.1", "not-a-port"]]], "is not understood"),
        ([["a", 10, ["127.0.0.1", 7000]]], "is not understood"),
        ([[10, 5, ["127.0.0.1", 7000]]], "outside 0-16383"),
        ([[0, 16384, ["127.0.0.1", 7000]]], "outside 0-16383"),
    ],
    ids=["text", "no-node", "bad-port", "bad-slot", "reversed", "past-the-end"],
)
def test_a_slots_reply_it_cannot_read_is_a_clear_error(reply: object, needle: str) -> None:
    """Hostile or garbled CLUSTER SLOTS replies: a ValueError that says what is wrong."""
    with pytest.raises(ValueError, match=needle):
        masters_of(reply)


def test_cli_on_the_cluster(settings: Settings, cluster_url: str, tmp_path: Path) -> None:
    """`saga doctor` with SAGA_REDIS_CLUSTER=true: the cluster row and the config row of the
    masters are printed; the exit code is 0 exactly when every row is ok."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_") and k != "REDIS_URL"}
    env.update(
        SAGA_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        SAGA_REDIS_URL=cluster_url,
        SAGA_REDIS_CLUSTER="true",
        SAGA_COMMANDS_TOPIC=settings.commands_topic,
        SAGA_EVENTS_TOPIC=settings.events_topic,
        SAGA_DLQ_TOPIC=settings.dlq_topic,
    )
    done = subprocess.run(
        [SAGA, "doctor"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert "ok   redis cluster: a Redis Cluster: all 16384 slots" in done.stdout, done.stdout
    ideal = all(config_is_ideal(a) for a in masters_asked_directly(cluster_url))
    assert ("ok   redis config:" if ideal else "FAIL redis config:") in done.stdout, done.stdout
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith(("ok   ", "FAIL ")) for line in lines), done.stdout
    every_row_ok = all(line.startswith("ok   ") for line in lines)
    assert done.returncode == (0 if every_row_ok else 1), done.stdout + done.stderr
    assert "Traceback" not in done.stderr
