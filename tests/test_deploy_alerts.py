"""deploy/prometheus/alerts.yml: promtool accepts it, its unit tests (alerts_test.yml) pass and
can fail, every alert is unit-tested firing, and it names only metrics /metrics exposes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import SCRAPE_SERIES, exposed_metrics, metric_names

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"

#: what issue 15 asks the rules to cover, and the alerts that do
REQUIRED = {
    "stuck sagas": {"SagaStuck"},
    "dead-letter growth": {"SagaDeadLetterGrowth", "SagaDeadLetterFlood"},
    "needs intervention": {"SagaNeedsIntervention"},
    "consumer lag": {"SagaConsumerLagHigh", "SagaConsumerLagGrowing"},
    "relay lag": {"SagaRelayLag", "SagaRelayErrors", "SagaRelayRestarting"},
    "orchestrator not ready": {
        "SagaOrchestratorNotReady",
        "SagaOrchestratorDown",
        "SagaOrchestratorAbsent",
    },
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (scripts/test installs Debian's prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_promtool_check_rules_accepts_the_rules(promtool: str) -> None:
    """`promtool check rules` finds every rule valid."""
    out = _run(promtool, "check", "rules", RULES)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in out.stdout


def test_promtool_test_rules_passes(promtool: str) -> None:
    """Every unit test in alerts_test.yml passes."""
    out = _run(promtool, "test", "rules", RULE_TESTS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@pytest.mark.parametrize(
    ("alert", "before", "after"),
    [
        ("SagaStuck", "max(saga_sagas_stuck) > 0", "max(saga_sagas_stuck) > 3"),
        ("SagaStuck", "max(saga_sagas_stuck) > 0", "sum(saga_sagas_stuck) > 0"),
        ("SagaRelayLag", "max(saga_outbox_depth) > 1000", "max(saga_outbox_depth) > 100"),
        ("SagaNeedsIntervention", 'max(saga_sagas{state="needs_intervention"})', "vector(0)"),
        ("SagaOrchestratorNotReady", "saga_ready == 0", "saga_ready < 0"),
        ("SagaOrchestratorNotReady", "saga_ready == 0", "saga_ready == 0 or saga_redis_up == 0"),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(
    promtool: str, tmp_path: Path, alert: str, before: str, after: str
) -> None:
    """A rule made too eager, too lax or blind fails `promtool test rules`: the tests bite."""
    text = RULES.read_text()
    assert text.count(before) == 1, f"{before!r} is not in {alert} once"
    (tmp_path / "alerts.yml").write_text(text.replace(before, after))
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    out = _run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert out.returncode != 0, f"the tests did not notice a broken {alert}"
    assert alert in out.stdout + out.stderr


def test_every_alert_is_unit_tested_firing() -> None:
    """Each alert has at least one unit test that expects it to fire, and one that expects it
    quiet (before its `for`, or on a healthy control)."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_the_rules_cover_what_issue_15_asks() -> None:
    """Stuck sagas, DLQ growth, needs-intervention, consumer lag, relay lag, not ready."""
    names = {rule["alert"] for rule in _rules()}
    for topic, alerts in REQUIRED.items():
        assert alerts <= names, f"{topic}: missing {alerts - names}"


def test_every_alert_is_labelled_and_explained() -> None:
    """A severity Alertmanager can route on, and a summary and description for the person."""
    for rule in _rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_rules_name_only_metrics_that_metrics_exposes() -> None:
    """Every metric an expression reads is one the orchestrator renders (or Prometheus' own
    `up`): a renamed metric would leave an alert that can never fire."""
    exposed = exposed_metrics() | SCRAPE_SERIES
    used: set[str] = set()
    for rule in _rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert names <= exposed, f"{rule['alert']} names {names - exposed}, not on /metrics"
        used |= names
    assert len(used) >= 10


def test_the_metric_name_check_sees_a_wrong_name() -> None:
    """The checker itself: a misspelt metric is reported, label values and functions are not."""
    names = metric_names('sum(rate(saga_dead_letterd_total{kind="up"}[5m])) by (instance) > 1')
    assert names == {"saga_dead_letterd_total"}
    assert "saga_dead_letterd_total" not in exposed_metrics()
    assert {"saga_sagas", "saga_consumer_lag", "saga_step_latency_seconds_bucket"} <= (
        exposed_metrics()
    )
