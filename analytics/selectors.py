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

from .anomalies import DIMENSIONS, Anomaly, AnomalyReads, Contributor, spend_anomalies
from .recommendations import Recommendation, savings_recommendations
from .series import Point, scope_kind, spend_series, spend_series_many
from .trends import Trend, scope_forecast, spend_trend

__all__ = [
    "DIMENSIONS",
    "Anomaly",
    "AnomalyReads",
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


def anomaly_summary(*, scope: str, start: datetime, end: datetime, reads: AnomalyReads | None = None) -> AnomalySummary:
    """Anomalies in [start, end) of `scope` (global: every dimension's scopes, global included).
    `reads` (optional) shares rollup reads with the other questions of one request or pass."""
    if scope == "global":
        found = spend_anomalies(start=start, end=end, reads=reads)
    else:
        found = spend_anomalies(start=start, end=end, scopes=[scope], reads=reads)
    return AnomalySummary(score=found[0].score if found else Decimal(0), anomalies=found)


def anomaly_summaries(
    questions: Iterable[tuple[str, datetime, datetime]],
) -> dict[tuple[str, datetime, datetime], AnomalySummary]:
    """anomaly_summary of each (scope, start, end), keyed by it: what anomaly_summary answers for
    each, computed together. The questions about one window read its rollups once (every
    dimension they need in one statement) and each scope's history once; alert evaluation asks
    this for all its rules of metric "anomaly" at once."""
    wanted = list(dict.fromkeys(questions))
    reads = AnomalyReads()
    dimensions: dict[tuple[datetime, datetime], set[str]] = {}
    for scope, start, end in wanted:
        dimensions.setdefault((start, end), set()).update(DIMENSIONS if scope == "global" else {scope_kind(scope)})
    for (start, end), kinds in dimensions.items():
        reads.prepare(start=start, end=end, dimensions=kinds)
    return {
        (scope, start, end): anomaly_summary(scope=scope, start=start, end=end, reads=reads)
        for scope, start, end in wanted
    }
