"""deploy/grafana/saga-orchestrator.json: valid JSON Grafana can import, every query valid
PromQL naming only metrics /metrics exposes, and the same figures as the alert rules."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import SCRAPE_SERIES, exposed_metrics, metric_names

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "saga-orchestrator.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


def _dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p.get("type") != "row"]


def _exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels() for t in p["targets"]]


def test_the_dashboard_is_json_grafana_can_import() -> None:
    """Parses as JSON; a uid, a title, a Prometheus datasource variable; unique panel ids; every
    panel queries that datasource and has a place on the grid."""
    doc = _dashboard()
    assert doc["uid"] and doc["title"] and isinstance(doc["schemaVersion"], int)
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_queries_name_only_metrics_that_metrics_exposes() -> None:
    """A panel over a metric the orchestrator does not serve would stay empty forever."""
    exposed = exposed_metrics() | SCRAPE_SERIES
    for title, expr in _exprs():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= exposed, f"{title}: {names - exposed} not on /metrics"


def test_the_dashboard_shows_what_the_alerts_watch() -> None:
    """Every metric an alert reads has a panel, so a page can be looked at."""
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerted = set().union(*(metric_names(r["expr"]) for r in rules))
    shown = set().union(*(metric_names(expr) for _, expr in _exprs()))
    assert alerted - shown == set()
    described = " ".join(p.get("description", "") for p in _panels())
    for rule in rules:
        assert rule["alert"] in described, f"no panel mentions {rule['alert']}"


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query (as a recording rule, Grafana's $__rate_interval as 5m)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool is not installed (scripts/test installs Debian's prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    rules = [
        {"record": f"dashboard:query_{i}", "expr": re.sub(r"\$__\w+", "5m", expr)}
        for i, (_, expr) in enumerate(_exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "d",
                        "rules": [
                            {"record": "dashboard:bad", "expr": "sum(rate(saga_inputs_total[5m])"}
                        ],
                    }
                ]
            }
        )
    )
    out = subprocess.run(
        [promtool, "check", "rules", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0, "promtool accepted an unbalanced query"
