"""docker/grafana: the provisioned datasource, and the dashboard generated from monitoring/dashboard.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from monitoring.metrics import METRICS

dashboard = pytest.importorskip("monitoring.dashboard", reason="grafana-foundation-sdk is a development dependency")

GRAFANA = Path(__file__).resolve().parents[2] / "docker" / "grafana"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
EXPECTED_PANELS = {
    "Total cost over time",
    "Cost by provider",
    "Cost by model (top 10, this time range)",
    "Hourly cost rate",
    "Budget utilisation",
    "Forecast vs limit",
    "Cost per lead",
    "GPU cost",
    "GPU utilisation: busy vs idle",
    "Tokens by kind",
    "Request rate",
    "Error rate",
    "Rate-limit hits",
    "Alerts firing",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords,
    label names (in {...} or by/without (...)), strings, ranges or Grafana's $__variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[match.end() :].lstrip()
        if not following.startswith("(") and match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def panels() -> list[dict]:
    return [
        p for p in json.loads((GRAFANA / "dashboards" / "costcontrol.json").read_text())["panels"] if p["type"] != "row"
    ]


def test_the_committed_dashboard_is_what_the_code_makes():
    committed = (GRAFANA / "dashboards" / "costcontrol.json").read_text()

    assert committed == dashboard.render(), "run: .venv/bin/python -m monitoring.dashboard"


def test_every_panel_query_names_only_metrics_the_app_exports():
    exported = {sample for doc in METRICS for sample in doc.sample_names}
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= exported, (panel["title"], names - exported)


def test_the_metric_name_parser_sees_through_functions_labels_and_ranges():
    expr = 'histogram_quantile(0.95, sum by (le, provider) (rate(x_bucket{error_type="a b"}[$__rate_interval]))) / on (provider) y'
    assert metric_names(expr) == {"x_bucket", "y"}


def test_the_dashboard_has_the_panels_the_issue_asks_for_on_the_provisioned_datasource():
    titles = {p["title"] for p in panels()}
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ][0]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "costcontrol.yml").read_text())["providers"][0]

    assert titles >= EXPECTED_PANELS
    assert {p["datasource"]["uid"] for p in panels()} == {datasource["uid"]}
    assert datasource["url"] == "http://prometheus:9090"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert len({p["id"] for p in panels()}) == len(panels())
    utilisation = next(p for p in panels() if p["title"] == "Budget utilisation")
    steps = utilisation["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.8, 1]
