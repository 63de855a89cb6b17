"""What /metrics exposes, and the metric names a PromQL expression reads: the alert rules and
the Grafana dashboard in deploy/ may only name the former (tests/test_deploy_*.py)."""

from __future__ import annotations

import re

from orchestrator.telemetry.metrics import Gauges, Metrics

#: series Prometheus makes itself for every scrape target, not served by /metrics
SCRAPE_SERIES = frozenset({"up"})

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_LABEL_LISTS = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_RANGES = re.compile(r"\[[^\[\]]*\]")
_DURATION_OR_NUMBER = re.compile(r"(?<![A-Za-z_:])\d[\w.]*")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_GRAFANA_VARS = re.compile(r"\$\{?__\w+\}?|\$\{?\w+(?::\w+)?\}?")


def exposed_metrics() -> frozenset[str]:
    """Every series name the orchestrator's /metrics renders, with every optional gauge
    present (histogram series included: _bucket, _sum, _count)."""
    gauges = Gauges(
        sagas_by_state={"pending": 1},
        outbox_depth=0,
        sagas_stuck=0,
        consumer_lag={("saga-events", 0): 1},
        assigned_partitions=1,
    )
    names = set()
    for line in Metrics().render(gauges).splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects. Strings, label matchers, label lists, ranges, numbers,
    keywords and function names are not metric names; Grafana's $variables are dropped."""
    text = _GRAFANA_VARS.sub("1", expr)
    text = _STRING.sub('""', text)
    text = _MATCHERS.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _DURATION_OR_NUMBER.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group(0)
        if word.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", text[m.end() :]):  # a function call
            continue
        names.add(word)
    return names
