"""What the deployment tests share: paths, tools, the dashboard's and alerts' queries.

The Grafana dashboard (``grafana/sendstack-bridge.json``) and the alert rules
(``helm/sendstack-bridge/files/alerts.yaml``, the file the chart's
PrometheusRule is made of) are read here once, so that the static tests (names
exist in our registries, promtool) and the live test (a real Prometheus
scraping a real bridge) check the very same expressions.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

import bridge.journal_metrics
import bridge.metrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sendstack-bridge"
ALERTS = CHART / "files" / "alerts.yaml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yaml"
DASHBOARD = REPO / "grafana" / "sendstack-bridge.json"
RUNBOOK = REPO / "docs" / "runbook.md"


def require_tool(name: str) -> str:
    """The path of a Prometheus binary; skip without it, except in CI, which fails."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = (
        f"{name} is not installed (Debian: apt-get install prometheus, which "
        "also provides promtool)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must have it (.ci/run installs it)")
    pytest.skip(message)


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Prometheus tool (see `require_tool`) from the repository root."""
    return subprocess.run(  # noqa: S603 - a tool found on PATH, fixed arguments
        [require_tool(name), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
    )


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard or of an alert, and where it is."""

    where: str
    expr: str


def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON model."""
    model: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return model


def dashboard_rows() -> list[tuple[str, list[dict[str, Any]]]]:
    """The dashboard's rows in order, each with the panels under it."""
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    for panel in load_dashboard()["panels"]:
        if panel["type"] == "row":
            rows.append((panel["title"], []))
        else:
            assert rows, f"panel {panel['title']!r} comes before the first row"
            rows[-1][1].append(panel)
    return rows


def dashboard_queries() -> list[Query]:
    """Every panel target's expression, named ``row / panel / refId``."""
    return [
        Query(f"{row} / {panel['title']} / {target['refId']}", target["expr"])
        for row, panels in dashboard_rows()
        for panel in panels
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of the alerts file."""
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in rules["groups"] for rule in group["rules"]]


def alert_queries() -> list[Query]:
    """Every alert's expression, named ``alert <name>``."""
    return [Query(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


@dataclass(frozen=True)
class LabelValues:
    """A query variable, ``label_values(<selector>, <label>)``."""

    name: str
    selector: str
    label: str


def dashboard_variables() -> list[LabelValues]:
    """The dashboard's query variables."""
    variables = []
    for variable in load_dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match is not None, f"variable {variable['name']}: {query!r}"
        variables.append(LabelValues(variable["name"], match[1], match[2]))
    return variables


# --------------------------------------------------------------------------
# Metric names

_NOT_METRICS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Enough of PromQL for our expressions: strings, label matchers, ranges and
    grouping clauses are removed first; then every identifier that is not
    called like a function and is not a keyword is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )
    names = re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {name for name in names if name.lower() not in _NOT_METRICS}


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}

# The modules that define the bridge's metrics: the journal's are kept apart
# (bridge/journal_metrics.py) and registered by the stream app.
METRIC_MODULES = (bridge.metrics, bridge.journal_metrics)

# How to build each metrics class of METRIC_MODULES on a registry. A class
# missing here is built with the registry alone.
_BUILDERS: dict[str, Callable[[CollectorRegistry], object]] = {
    "CommandMetrics": lambda registry: bridge.metrics.CommandMetrics(
        registry, ("book_delivery",)
    ),
    # Parts of StreamMetrics (same names), which is built on the same registry.
    "SinkMetrics": lambda registry: None,
    "IntakeMetrics": lambda registry: None,
    "OutputMetrics": lambda registry: None,
}


def metric_classes() -> list[type]:
    """Every class of `METRIC_MODULES` that registers metrics."""
    return [
        cls
        for module in METRIC_MODULES
        for name, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and name.endswith(("Metrics", "Metric"))
    ]


def registry_metric_names() -> set[str]:
    """Every sample name our metric classes expose, children created or not."""
    registry = CollectorRegistry()
    for cls in metric_classes():
        build = _BUILDERS.get(cls.__name__, cls)
        try:
            build(registry)
        except TypeError as exc:  # a new class whose constructor takes more
            pytest.fail(
                f"cannot build {cls.__name__}({exc}); add it to _BUILDERS in "
                "tests/deploy/observability.py"
            )
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names
