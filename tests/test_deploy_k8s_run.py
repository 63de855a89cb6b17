"""The chart's environment runs the real thing: an orchestrator started with exactly the
environment and secret files the chart gives its pod, against the test's Kafka and Redis."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from schemas.config import Settings
from tests.support.helm import DEV, Doc, containers, deployment, env, find_helm, kinds, render
from tests.support.kafka import wait_for
from tests.support.procs import stop

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def helm() -> str:
    return find_helm()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubelet_files(dep: Doc, docs: list[Doc], root: Path) -> dict[str, str]:
    """What the kubelet would mount from the chart's own Secrets, written under `root`: the
    container path of each file -> its path here."""
    secrets = {s["metadata"]["name"]: s["data"] for s in kinds(docs, "Secret")}
    (container,) = containers(dep)
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    moved: dict[str, str] = {}
    for mount in container["volumeMounts"]:
        for source in volumes[mount["name"]].get("projected", {}).get("sources", []):
            data = secrets[source["secret"]["name"]]
            for item in source["secret"]["items"]:
                here = root / mount["mountPath"].lstrip("/") / item["path"]
                here.parent.mkdir(parents=True, exist_ok=True)
                here.write_bytes(base64.b64decode(data[item["key"]]))
                moved[f"{mount['mountPath']}/{item['path']}"] = str(here)
    return moved


async def test_the_chart_environment_runs_a_real_orchestrator(
    helm: str, settings: Settings, tmp_path: Path
) -> None:
    """The orchestrator started with exactly the environment and secret files the chart gives
    its pod (pointed at the test's Kafka and Redis) listens beyond loopback with the tokens,
    turns ready on /readyz, serves /metrics to the metrics token only, and drains on SIGTERM."""
    port = _free_port()
    docs = render(
        helm,
        *("-f", str(DEV)),
        *("--set", "kafka.securityProtocol=PLAINTEXT,redis.auth=false,orchestrator.replicas=1"),
        *("--set", f"kafka.bootstrapServers={settings.kafka_bootstrap_servers}"),
        *("--set", f"redis.url={settings.redis_url}"),
        *("--set", f"topics.commands={settings.commands_topic}"),
        *("--set", f"topics.events={settings.events_topic}"),
        *("--set", f"topics.dlq={settings.dlq_topic}"),
        *("--set", f"topics.partitions={settings.topic_partitions}"),
        *("--set", f"keyPrefix={settings.key_prefix}"),
        *("--set", f"orchestrator.http.port={port}"),
    )
    dep = deployment(docs, "orchestrator")
    moved = _kubelet_files(dep, docs, tmp_path)
    (container,) = containers(dep)
    chart_env = {k: moved.get(v, v) for k, v in env(container).items()}
    assert chart_env["SAGA_HTTP_TOKENS_FILE"].startswith(str(tmp_path))
    proc_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **chart_env}
    metrics_token = yaml.safe_load(DEV.read_text())["secrets"]["metricsToken"]
    log = tmp_path / "orchestrator.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.ops.cli", *container["args"]],
            env=proc_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,  # no .env of the work tree
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    return (await http.get(f"{base}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, 120, "/readyz to answer 200")
            assert (await http.get(f"{base}/livez")).status_code == 200
            assert (await http.get(f"{base}/metrics")).status_code == 401
            auth = {"Authorization": f"Bearer {metrics_token}"}
            metrics = await http.get(f"{base}/metrics", headers=auth)
            assert metrics.status_code == 200
            # the one copy owns every partition of both input topics
            owned = settings.topic_partitions  # each partition once, not once per topic
            assert f"saga_assigned_partitions {owned}\n" in metrics.text
        proc.terminate()
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            stop(proc)
