"""Reads shared by the admin, commands, reports, the API and metrics.

"How much in this window" is answered from SpendRollup, never by scanning the ledger.
The only ledger scans are the audit ones (verify_ledger, rebuild_rollups).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from costcontrol.money import from_nanos

from .models import ROLLUP_COUNTERS, CostEntry, Price, SpendRollup


def spend_total(*, scope: str, start: datetime, end: datetime, currency: str = "USD") -> Decimal:
    """Spend of a scope in [start, end), from the hourly rollups. Bounds are rounded down to the hour."""
    total = SpendRollup.objects.filter(scope=scope, currency=currency, bucket__gte=start, bucket__lt=end).aggregate(
        total=Sum("amount")
    )["total"]
    return total if total is not None else Decimal("0E-9")


def price_history(price: Price) -> list[Price]:
    """Every version of the same priced thing, newest first."""
    return list(
        Price.objects.filter(
            provider=price.provider,
            model=price.model,
            operation=price.operation,
            unit=price.unit,
            variant=price.variant,
        ).order_by("-valid_from")
    )


def ledger_rollup_totals(*, chunk_size: int = 5000) -> dict[tuple[str, datetime, str], list[Any]]:
    """What every rollup row should hold, recomputed from the whole ledger (an audit scan).

    Uses the write path's own scope and counter functions, so it checks bucketing too.
    """
    from .services import rollup_deltas

    entries = CostEntry.objects.select_related("team").order_by("pk").iterator(chunk_size=chunk_size)
    totals: dict[tuple[str, datetime, str], list[Any]] = {}
    batch: list[CostEntry] = []

    def flush() -> None:
        for key, counters in rollup_deltas(batch).items():
            current = totals.get(key)
            if current is None:
                totals[key] = counters
            else:
                for i, value in enumerate(counters):
                    current[i] += value
        batch.clear()

    for entry in entries:
        batch.append(entry)
        if len(batch) >= chunk_size:
            flush()
    flush()
    return totals


@dataclass(frozen=True)
class LedgerDifference:
    scope: str
    bucket: datetime
    currency: str
    field: str
    ledger: Any
    rollup: Any


def ledger_differences() -> tuple[list[LedgerDifference], int, int]:
    """Compare the ledger with the rollups. Returns (differences, ledger-derived rows, rollup rows)."""
    expected = ledger_rollup_totals()
    actual: dict[tuple[str, datetime, str], list[Any]] = {}
    for row in SpendRollup.objects.values_list("scope", "bucket", "currency", *ROLLUP_COUNTERS).iterator(
        chunk_size=5000
    ):
        scope, bucket, currency, nanos, *counts = row
        actual[(scope, bucket, currency)] = [from_nanos(nanos) if isinstance(nanos, int) else nanos, *counts]
    zero = [Decimal(0)] + [0] * (len(ROLLUP_COUNTERS) - 1)
    differences: list[LedgerDifference] = []
    for key in sorted(set(expected) | set(actual)):
        want, have = expected.get(key, zero), actual.get(key, zero)
        for name, w, h in zip(ROLLUP_COUNTERS, want, have, strict=True):
            if w != h:
                differences.append(LedgerDifference(*key, field=name, ledger=w, rollup=h))
    return differences, len(expected), len(actual)


def ledger_totals_by_currency() -> dict[str, Decimal]:
    """Sum of the ledger per currency (audit only: used by verify_ledger's summary)."""
    return {
        row["currency"]: row["total"]
        for row in CostEntry.objects.values("currency").annotate(total=Sum("amount")).order_by("currency")
    }
