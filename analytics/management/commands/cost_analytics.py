"""python manage.py cost_analytics [--scope SCOPE ...] [--days 28] [--period monthly] [--hours 24] [--json]"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from budgets.models import Period
from core.scopes import scope_errors

from ...selectors import anomaly_summary, savings_recommendations, spend_trend


class Command(BaseCommand):
    help = (
        "Trends with a forecast of the current period, anomalies with their root cause, and savings "
        "recommendations, all read from the rollups and the price catalog."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            help="global (default), provider:X, model:X, service:X, subject:X, tag:K=V ... (repeatable). "
            "Anomalies of global cover every provider, model, service and subject.",
        )
        parser.add_argument("--days", type=int, default=28, help="Days of history for the trend (default 28).")
        parser.add_argument(
            "--period",
            default="monthly",
            choices=[p for p in Period.values if p != "none"],
            help="The period to forecast (default monthly).",
        )
        parser.add_argument(
            "--hours", type=int, default=24, help="Look for anomalies in the last N hours (default 24)."
        )
        parser.add_argument("--at", help="Pretend it is this ISO-8601 moment (default now).")
        parser.add_argument("--json", action="store_true", help="Print one JSON document.")

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = options["scopes"] or ["global"]
        for scope in scopes:
            if problems := scope_errors(scope):
                raise CommandError(f"--scope {scope!r}: {problems[0]}")
        if options["days"] < 1 or options["hours"] < 1:
            raise CommandError("--days and --hours must be at least 1")
        at = self._at(options["at"])
        trends = [spend_trend(scope=scope, at=at, days=options["days"], period=options["period"]) for scope in scopes]
        start = at.replace(minute=0, second=0, microsecond=0) - timedelta(hours=options["hours"] - 1)
        anomalies = []
        for scope in scopes:
            anomalies += anomaly_summary(scope=scope, start=start, end=at).anomalies
        providers = {s.partition(":")[2] for s in scopes if s.startswith("provider:")}
        provider = next(iter(providers)) if len(providers) == 1 and len(scopes) == 1 else None
        recommendations = savings_recommendations(at=at, provider=provider)
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "at": at.isoformat(),
                        "trends": [t.as_dict() for t in trends],
                        "anomalies": [a.as_dict() for a in anomalies],
                        "recommendations": [r.as_dict() for r in recommendations],
                    },
                    indent=2,
                )
            )
            return
        for trend in trends:
            self.stdout.write(self.style.MIGRATE_HEADING(f"Trend of {trend.scope} over {trend.days} days"))
            change = "" if trend.change_percent is None else f", {trend.change_percent:+} % over the window"
            self.stdout.write(
                f"  {trend.direction}: {trend.slope_per_day.quantize(Decimal('0.0001')):+} USD/day{change} "
                f"(confidence {trend.confidence * 100:.1f} %{', weekday-corrected' if trend.seasonal else ''})"
            )
            for note in trend.notes:
                self.stdout.write(f"  {note}")
            f = trend.forecast
            if f is not None:
                self.stdout.write(f"  {trend.period} forecast: {f.describe('USD')}")
        self.stdout.write(self.style.MIGRATE_HEADING(f"Anomalies in the last {options['hours']} hours"))
        if not anomalies:
            self.stdout.write("  none")
        for anomaly in anomalies:
            self.stdout.write(f"  [{anomaly.severity}] {anomaly.describe()}")
        self.stdout.write(self.style.MIGRATE_HEADING("Recommendations"))
        if not recommendations:
            self.stdout.write("  none")
        for rec in recommendations:
            self.stdout.write(f"  {rec.title}")
            self.stdout.write(f"    {rec.detail}")

    def _at(self, raw: str | None) -> datetime:
        if not raw:
            return timezone.now()
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            raise CommandError(f"--at {raw!r} is not an ISO-8601 moment") from None
        if timezone.is_naive(at):
            raise CommandError("--at needs a time zone offset, e.g. 2026-11-23T10:00:00+00:00")
        return at
