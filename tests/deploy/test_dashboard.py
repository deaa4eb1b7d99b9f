"""The Grafana dashboard's structure and the metric names its panels use."""

from __future__ import annotations

import itertools

from tests.deploy.observability import (
    dashboard_queries,
    dashboard_rows,
    dashboard_variables,
    load_dashboard,
    metric_names,
    registry_metric_names,
)

ROWS = ["Overview", "Stream", "Session", "Webhooks", "Commands", "Kafka"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_rows_are_overview_stream_session_webhooks_commands_kafka() -> None:
    """The rows come in the issue's order."""
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
    """Every metric a panel or a variable selects is defined in bridge/metrics.py."""
    known = registry_metric_names()
    queries = [(q.where, q.expr) for q in dashboard_queries()]
    queries += [(f"variable {v.name}", v.selector) for v in dashboard_variables()]
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - known
        assert not unknown, f"{where}: {sorted(unknown)} not in bridge.metrics"


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
