"""python manage.py budget_status [--json]: where every active budget stands this period, and each
template's values (how many, how many at each level, the highest utilisation)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from budgets.models import Budget
from budgets.selectors import BudgetStatus, TemplateSummary, budget_statuses, template_summary
from core.money import format_money


def _status_dict(status: BudgetStatus) -> dict[str, Any]:
    budget, forecast = status.budget, status.forecast

    def money(value: Any) -> str | None:
        return None if value is None else f"{value:f}"

    return {
        "id": budget.pk,
        "name": budget.name,
        "scope": budget.scope,
        "period": budget.period,
        "period_start": status.period.start.isoformat(),
        "period_end": status.period.end.isoformat() if status.period.end else None,
        "currency": budget.currency,
        "spent": money(status.spent),
        "limit": money(status.limit),
        "carried_over": money(status.period.carried_over),
        "remaining": money(status.remaining),
        "reserved": money(status.reserved),
        "utilisation_percent": money(status.utilisation),
        "level": status.level_label,
        "forecast": None if forecast is None else money(forecast.amount),
        "forecast_low": None if forecast is None else money(forecast.low),
        "forecast_high": None if forecast is None else money(forecast.high),
        "forecast_method": None if forecast is None else forecast.method,
        "projected_exceed_at": forecast.exceed_at.isoformat() if forecast and forecast.exceed_at else None,
        "days_left": status.days_left,
        "hard_limit": budget.hard_limit,
    }


def _template_dict(summary: TemplateSummary) -> dict[str, Any]:
    return {**summary.as_json(), "top": [_status_dict(s) for s in summary.top]}


class Command(BaseCommand):
    help = "Print every active budget: spent, limit, remaining, utilisation, level, forecast, days left."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Machine-readable output (amounts as strings).")

    def handle(self, *args: Any, **options: Any) -> None:
        statuses = budget_statuses(Budget.objects.plain().filter(is_active=True).order_by("name", "pk"), forecasts=True)
        templates = [
            template_summary(t, top=3) for t in Budget.objects.templates().filter(is_active=True).order_by("name", "pk")
        ]
        if options["json"]:
            rows = [_status_dict(s) for s in statuses] + [_template_dict(t) for t in templates]
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not statuses and not templates:
            self.stdout.write("No active budgets.")
            return
        for s in statuses:
            currency = s.budget.currency
            utilisation = "-" if s.utilisation is None else f"{s.utilisation}%"
            forecast = "-" if s.forecast is None else s.forecast.describe(currency)
            days = "-" if s.days_left is None else str(s.days_left)
            line = (
                f"{s.budget.name} [{s.budget.scope}, {s.budget.period}]: spent {format_money(s.spent, currency)} "
                f"of {format_money(s.limit, currency)}, remaining {format_money(s.remaining, currency)}, "
                f"{utilisation}, level {s.level_label}, forecast {forecast}, days left {days}"
            )
            if s.forecast_label:
                line += f", {s.forecast_label}"
            self.stdout.write(line)
        for t in templates:
            budget = t.template
            levels = ", ".join(f"{count:,} {label}" for label, count in t.levels.items() if count)
            top = "; ".join(f"{s.budget.value} {'-' if s.utilisation is None else f'{s.utilisation}%'}" for s in t.top)
            self.stdout.write(
                f"{budget.name} [{budget.scope}, {budget.period}, template]: "
                f"{format_money(budget.amount, budget.currency)} each, {t.values:,} values "
                f"({t.overrides:,} with their own amount), {t.spending:,} spent this period"
                + (f": {levels}" if levels else "")
                + (f"; highest: {top}" if top else "")
            )
