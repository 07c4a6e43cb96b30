"""The Grafana dashboard "Cost control", as code (grafana-foundation-sdk, a development dependency).

    .venv/bin/python -m monitoring.dashboard            # rewrite docker/grafana/dashboards/costcontrol.json
    .venv/bin/python -m monitoring.dashboard --check    # exit 1 if the file is not what this code makes

The JSON is committed (Grafana provisions it from docker/grafana/); a test checks it is up to date
and that every query names only metrics monitoring.metrics exports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueColorMode, GraphDrawStyle, LegendDisplayMode, StackingMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, DataTransformerConfig, Threshold, ThresholdsMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent.parent / "docker" / "grafana" / "dashboards" / "costcontrol.json"
UID = "costcontrol"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")  # docker/grafana/provisioning/datasources
USD = "currencyUSD"


def query(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(PromQueryFormat.TABLE)
    return q


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    config = dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
    return config.steps([Threshold(value=value, color=color) for value, color in steps])


def series(title: str, *queries: prometheus.Dataquery, unit: str = USD, stacked: bool = False, width: int = 12,
           bars: bool = False, description: str = "") -> timeseries.Panel:  # fmt: skip
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(width)
        .fill_opacity(20 if stacked else 5)
        .legend(common.VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST))
    )
    if description:
        panel = panel.description(description)
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(StackingMode.NORMAL))
    if bars:
        panel = panel.draw_style(GraphDrawStyle.BARS)
    for q in queries:
        panel = panel.with_target(q)
    return panel


def single(title: str, expr: str, *, unit: str = USD, steps: tuple[tuple[float | None, str], ...] = ()) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(4)
        .span(6)
        .color_mode(BigValueColorMode.BACKGROUND if steps else BigValueColorMode.VALUE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(query(expr))
    )
    if steps:
        panel = panel.thresholds(thresholds(*steps))
    return panel


def build() -> dict[str, Any]:
    """The dashboard as the JSON object Grafana reads."""
    cost = "costcontrol_cost_dollars_total"
    rate_window = "[$__rate_interval]"
    board = (
        dashboard.Dashboard("Cost control")
        .uid(UID)
        .description("What AI APIs and GPUs cost, budgets, cost per lead and alerts (costcontrol's /metrics).")
        .tags(["costcontrol"])
        .time("now-7d", "now")
        .refresh("1m")
        .timezone("browser")
        .editable()
        .with_row(dashboard.Row("Spend"))
        .with_panel(single("Spend, last 24 hours", f"sum(increase({cost}[24h]))"))
        .with_panel(single("Spend, last 30 days", f"sum(increase({cost}[30d]))"))
        .with_panel(
            single("Alerts firing", "sum(costcontrol_alerts_firing)", unit="none", steps=((None, "green"), (1, "red")))
        )
        .with_panel(
            single(
                "Notifications waiting",
                "costcontrol_notifications_pending",
                unit="none",
                steps=((None, "green"), (10, "orange")),
            )
        )
        .with_panel(
            series("Total cost over time", query(f"sum({cost})", "total"), description="Everything recorded, USD.")
        )
        .with_panel(
            series(
                "Hourly cost rate",
                query(f"sum(rate({cost}{rate_window})) * 3600", "USD per hour"),
                description="Spend per hour, averaged over the panel's step.",
            )
        )
        .with_panel(
            series(
                "Cost by provider",
                query(f"sum by (provider) (increase({cost}[$__interval]))", "{{provider}}"),
                stacked=True,
                bars=True,
            )
        )
        .with_panel(
            table.Panel()
            .title("Cost by model (top 10, this time range)")
            .datasource(DATASOURCE)
            .unit(USD)
            .height(8)
            .span(12)
            .with_target(query(f"topk(10, sum by (provider, model) (increase({cost}[$__range])))", instant=True))
            .with_transformation(DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}}))
        )
        .with_row(dashboard.Row("Budgets"))
        .with_panel(
            table.Panel()
            .title("Budget utilisation")
            .description("Spent / limit of each budget's current period: orange from 80 %, red from 100 %.")
            .datasource(DATASOURCE)
            .unit("percentunit")
            .height(9)
            .span(12)
            .thresholds(thresholds((None, "green"), (0.8, "orange"), (1, "red")))
            .with_target(query("costcontrol_budget_utilization_ratio", instant=True))
            .with_transformation(DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}}))
        )
        .with_panel(
            series(
                "Forecast vs limit",
                query("costcontrol_budget_forecast_dollars", "{{budget}} forecast", ref="A"),
                query("costcontrol_budget_limit_dollars", "{{budget}} limit", ref="B"),
                description="Spend projected at the end of each budget's period against its limit.",
            )
        )
        .with_row(dashboard.Row("Leads and GPUs"))
        .with_panel(
            series(
                "Cost per lead",
                query("costcontrol_batch_cost_per_lead_dollars", "{{pipeline}} (last batch)", ref="A"),
                query("costcontrol_cost_per_lead_month_dollars", "month to date", ref="B"),
            ).thresholds(thresholds((None, "green"), (3, "red")))
        )
        .with_panel(
            series(
                "GPU cost",
                query(
                    "sum by (gpu, name) (increase(costcontrol_gpu_cost_dollars_total[$__interval]))", "{{name}} {{gpu}}"
                ),
                stacked=True,
                bars=True,
            )
        )
        .with_panel(
            series(
                "GPU utilisation: busy vs idle",
                query("costcontrol_gpu_utilization_ratio", "{{gpu}} busy (latest sample)", ref="A"),
                query(f"rate(costcontrol_gpu_idle_seconds_total{rate_window})", "{{gpu}} idle", ref="B"),
                unit="percentunit",
                description="Busy: the latest sample's utilisation. Idle: idle seconds per second between samples.",
            )
        )
        .with_panel(
            series(
                "Tokens by kind",
                query(f"sum by (kind) (rate(costcontrol_tokens_total{rate_window}))", "{{kind}}"),
                unit="short",
                stacked=True,
            )
        )
        .with_row(dashboard.Row("Providers"))
        .with_panel(
            series(
                "Request rate",
                query(f"sum by (provider) (rate(costcontrol_requests_total{rate_window}))", "{{provider}}"),
                unit="reqps",
                width=8,
            )
        )
        .with_panel(
            series(
                "Error rate",
                query(
                    f'sum by (provider) (rate(costcontrol_errors_total{{error_type="error"}}{rate_window}))'
                    f" / sum by (provider) (rate(costcontrol_requests_total{rate_window}))",
                    "{{provider}}",
                ),
                unit="percentunit",
                width=8,
            ).thresholds(thresholds((None, "green"), (0.1, "red")))
        )
        .with_panel(
            series(
                "Rate-limit hits",
                query(
                    "sum by (provider, operation) (increase(costcontrol_rate_limit_hits_total[$__interval]))",
                    "{{provider}} {{operation}}",
                ),
                unit="short",
                width=8,
                bars=True,
            )
        )
        .with_panel(
            series(
                "Request duration (p95)",
                query(
                    "histogram_quantile(0.95, sum by (le, provider) "
                    f"(rate(costcontrol_request_duration_seconds_bucket{rate_window})))",
                    "{{provider}}",
                ),
                unit="s",
            )
        )
        .with_panel(
            series(
                "Alerts firing",
                query("costcontrol_alerts_firing", "{{severity}}"),
                unit="short",
                stacked=True,
            )
        )
    )
    built = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for number, panel in enumerate(built["panels"], start=1):
        panel["id"] = number  # unique ids: Grafana's panel links and "view" need them
    return built


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run python -m monitoring.dashboard", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
