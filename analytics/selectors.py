"""Analytics reads shared by the admin dashboard, the cost_analytics command and the alert rules.

Everything is computed from the rollups (SpendRollup, SpendRollupDay), the price catalog, budgets,
batches and GPU samples; nothing reads the ledger. Analytics writes nothing, so it has no
services: an anomaly becomes an alert through an alert rule of metric "anomaly"
(alerts.evaluation), like every other condition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .anomalies import DIMENSIONS, Anomaly, Contributor, spend_anomalies
from .recommendations import Recommendation, savings_recommendations
from .series import Point, spend_series, spend_series_many
from .trends import Trend, scope_forecast, spend_trend

__all__ = [
    "DIMENSIONS",
    "Anomaly",
    "AnomalySummary",
    "Contributor",
    "Point",
    "Recommendation",
    "Trend",
    "anomaly_summaries",
    "anomaly_summary",
    "savings_recommendations",
    "scope_forecast",
    "spend_anomalies",
    "spend_series",
    "spend_series_many",
    "spend_trend",
]


@dataclass(frozen=True)
class AnomalySummary:
    """What an alert rule of metric "anomaly" measures: the worst anomaly's score (0: none)."""

    score: Decimal
    anomalies: list[Anomaly]

    @property
    def worst(self) -> Anomaly | None:
        return self.anomalies[0] if self.anomalies else None


def anomaly_summary(*, scope: str, start: datetime, end: datetime) -> AnomalySummary:
    """Anomalies in [start, end) of `scope` (global: every dimension's scopes, global included)."""
    if scope == "global":
        found = spend_anomalies(start=start, end=end)
    else:
        found = spend_anomalies(start=start, end=end, scopes=[scope])
    return AnomalySummary(score=found[0].score if found else Decimal(0), anomalies=found)


def anomaly_summaries(
    questions: Iterable[tuple[str, datetime, datetime]],
) -> dict[tuple[str, datetime, datetime], AnomalySummary]:
    """anomaly_summary of each (scope, start, end), keyed by it (alert evaluation asks this for its
    rules of metric "anomaly"; rules with the same scope and window ask once)."""
    return {
        (scope, start, end): anomaly_summary(scope=scope, start=start, end=end)
        for scope, start, end in dict.fromkeys(questions)
    }
