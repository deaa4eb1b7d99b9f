"""The Grafana dashboard's structure and the metric names its panels use."""

from __future__ import annotations

import itertools

from prometheus_client import CollectorRegistry

from bridge.metrics import RoleMetrics
from tests.deploy.observability import (
    dashboard_queries,
    dashboard_rows,
    dashboard_variables,
    load_dashboard,
    metric_names,
    registry_metric_names,
)

ROWS = [
    "Overview",
    "Stream",
    "Session",
    "Webhooks",
    "Commands",
    "Kafka",
    "Journal",
    "Hot standby",
]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_rows_are_overview_stream_session_webhooks_commands_kafka_journal() -> None:
    """The rows come in the issue's order, then the stream's journal and hot standby."""
    assert [title for title, _ in dashboard_rows()] == ROWS


def test_every_row_has_panels() -> None:
    """No row is empty."""
    for title, panels in dashboard_rows():
        assert panels, f"row {title!r} has no panel"


def test_the_datasource_is_a_template_variable_used_everywhere() -> None:
    """Panels and targets query ``${datasource}``, a Prometheus datasource variable."""
    model = load_dashboard()
    (variable,) = [v for v in model["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE
    for _, panels in dashboard_rows():
        for panel in panels:
            assert panel["datasource"] == DATASOURCE, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_panel_expression_uses_only_our_metric_names() -> None:
    """Every metric a panel or a variable selects is one the bridge defines."""
    known = registry_metric_names()
    queries = [(q.where, q.expr) for q in dashboard_queries()]
    queries += [(f"variable {v.name}", v.selector) for v in dashboard_variables()]
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - known
        assert not unknown, f"{where}: {sorted(unknown)} not defined by the bridge"


def test_every_panel_filters_on_the_namespace_and_job_variables() -> None:
    """Each expression honours the dashboard's namespace and job selectors."""
    for query in dashboard_queries():
        assert 'namespace=~"$namespace"' in query.expr, query.where
        assert 'job=~"$job"' in query.expr, query.where


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Panel ids are unique and no two panels share a grid cell."""
    model = load_dashboard()
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in model["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x, y in itertools.product(
            range(pos["x"], pos["x"] + pos["w"]), range(pos["y"], pos["y"] + pos["h"])
        ):
            assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
            cells[(x, y)] = panel["title"]


def test_journal_row_shows_fill_age_latency_flow_and_losses() -> None:
    """The journal row charts every bridge_journal_* metric the stream exports."""
    ((_, panels),) = [(t, p) for t, p in dashboard_rows() if t == "Journal"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used == {
        "bridge_journal_bytes",
        "bridge_journal_max_bytes",
        "bridge_journal_entries",
        "bridge_journal_oldest_entry_age_seconds",
        "bridge_journal_commit_seconds_bucket",
        "bridge_journal_committed_total",
        "bridge_journal_replayed_total",
        "bridge_journal_blocked_seconds_total",
        "bridge_journal_dropped_total",
        "bridge_journal_blocked_total",
        "bridge_journal_corrupt_entries_total",
        "bridge_journal_quarantined_files_total",
    }
    quantiles = [e for e in exprs if "bridge_journal_commit_seconds_bucket" in e]
    assert [e.split(",")[0] for e in quantiles] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
    ]


def _role_metric_samples() -> dict[str, str]:
    """Each RoleMetrics family's name and the sample a panel charts it by."""
    registry = CollectorRegistry()
    RoleMetrics(registry)
    suffix = {"counter": "_total", "histogram": "_bucket", "gauge": ""}
    return {f.name: f.name + suffix[f.type] for f in registry.collect()}


def test_hot_standby_row_charts_every_role_metric() -> None:
    """The hot standby row charts every RoleMetrics metric, and nothing else."""
    ((_, panels),) = [(t, p) for t, p in dashboard_rows() if t == "Hot standby"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    used = set().union(*(metric_names(expr) for expr in exprs))
    samples = _role_metric_samples()
    assert len(samples) == 10
    assert used == set(samples.values())
    quantiles = [e for e in exprs if "bridge_stream_takeover_seconds_bucket" in e]
    assert [e.split(",")[0] for e in quantiles] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
    ]


def test_hot_standby_role_is_a_state_timeline_with_named_roles() -> None:
    """bridge_stream_role per replica is a state timeline of named roles."""
    ((_, panels),) = [(t, p) for t, p in dashboard_rows() if t == "Hot standby"]
    (panel,) = [
        p
        for p in panels
        if any("bridge_stream_role" in t["expr"] for t in p["targets"])
    ]
    assert panel["type"] == "state-timeline"
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    texts = {value: option["text"] for value, option in mapping["options"].items()}
    assert texts == {
        "0": "standby",
        "1": "taking over",
        "2": "leading",
        "3": "fenced (journaling)",
    }
    (target,) = panel["targets"]
    assert "{{account}}" in target["legendFormat"]
