"""Helm for the chart tests: find the binary scripts/ensure_helm builds, render the chart,
and pick objects out of what it rendered (tests/test_deploy_k8s*.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "saga-orchestrator"
PRODUCTION = CHART / "ci" / "production-values.yaml"
DEV = CHART / "ci" / "dev-values.yaml"

Doc = dict[str, Any]


def find_helm() -> str:
    """scripts/test builds helm with scripts/ensure_helm; SAGA_HELM or a helm on PATH also do.
    Missing: the test skips, or fails under CI=true."""
    where = subprocess.run(
        [str(ROOT / "scripts" / "ensure_helm"), "--where"], capture_output=True, text=True
    ).stdout.strip()
    for candidate in (os.environ.get("SAGA_HELM"), where, shutil.which("helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    reason = "helm is not built: run scripts/ensure_helm"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _template(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, "template", "saga", str(CHART), "--namespace", "shop", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def render(helm: str, *args: str) -> list[Doc]:
    """The objects `helm template` renders with these arguments (-f, --set ...)."""
    out = _template(helm, *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def refused(helm: str, *args: str) -> str:
    """helm's error for values it must refuse."""
    out = _template(helm, *args)
    assert out.returncode != 0, f"rendered although it should not: {args}"
    return out.stderr


def kinds(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[Doc], component: str) -> Doc:
    (found,) = [
        d
        for d in kinds(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def containers(doc: Doc) -> list[Doc]:
    spec = doc["spec"]["template"]["spec"]
    return list(spec["containers"]) + list(spec.get("initContainers", []))


#: what the kubelet puts in a `fieldRef` to the pod's name (the chart's SAGA_GROUP_INSTANCE_ID)
POD_NAME = "saga-orchestrator-7d9f-abcde"


def env(container: Doc) -> dict[str, str]:
    """A container's environment as the kubelet gives it: values, and the pod's name for a
    `fieldRef` to `metadata.name`; any other `valueFrom` is an error here."""
    out: dict[str, str] = {}
    for e in container.get("env", []):
        source = e.get("valueFrom")
        if source is None:
            out[e["name"]] = e.get("value", "")
        elif source == {"fieldRef": {"fieldPath": "metadata.name"}}:
            out[e["name"]] = POD_NAME
        else:
            raise AssertionError(f"{e['name']}: an env source the tests do not model: {source}")
    return out
