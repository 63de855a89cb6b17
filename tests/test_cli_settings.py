"""Hostile configuration: a bad SAGA_* setting ends in a one-line error and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CASES = [
    (["orchestrator", "run"], {"SAGA_BATCH_MAX_RECORDS": "abc"}, "SAGA_BATCH_MAX_RECORDS"),
    (["orchestrator", "run"], {"SAGA_TOPIC_PARTITIONS": "0"}, "SAGA_TOPIC_PARTITIONS"),
    (["orchestrator", "run"], {"SAGA_SAGA_MODULES": "not json"}, "SAGA_SAGA_MODULES"),
    (["participant", "run", "inventory"], {"SAGA_LOG_FORMAT": "xml"}, "SAGA_LOG_FORMAT"),
    (["doctor"], {"SAGA_KEY_PREFIX": "has space"}, "SAGA_KEY_PREFIX"),
]


@pytest.mark.parametrize(("args", "env", "name"), CASES, ids=[c[2] for c in CASES])
def test_bad_setting_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], name: str
) -> None:
    """The error names the variable; no traceback reaches the user."""
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.ops.cli", *args],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: setting {name}:"), lines[0]
