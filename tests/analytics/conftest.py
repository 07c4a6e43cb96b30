"""Generated usage with a known shape, for the analytics tests.

Series are written as ledger entries (bulk insert) and the rollups rebuilt from them with the
public rollups_rebuild service (the same delta functions as the record path), so ledger and
rollups agree as in production; recording ~10,000 events one by one through the API path would
cost seconds per test. Amounts are explicit, so the catalog only says which models belong to
which provider (the root-cause attribution reads it).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.factories import PriceFactory
from tracking.models import CostEntry, PricingStatus
from tracking.services import rollups_rebuild

HOUR = timedelta(hours=1)
# A Wednesday noon: the last 24 hours are a Tuesday afternoon to a Wednesday morning.
T0 = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)
HISTORY_DAYS = 29


@dataclass(frozen=True)
class Stream:
    provider: str
    model: str
    operation: str
    service: str
    hourly: Decimal  # spend per office hour on a weekday, all subjects together


STREAMS = (
    Stream("openai", "gpt-4o", "chat", "lead-gen", Decimal("0.60")),
    Stream("openai", "gpt-4o-mini", "chat", "lead-gen", Decimal("0.12")),
    Stream("anthropic", "claude-haiku-4-5", "chat", "support", Decimal("0.40")),
    Stream("anthropic", "claude-sonnet-4-5", "chat", "support", Decimal("0.20")),
    Stream("openai", "text-embedding-3-small", "embedding", "search", Decimal("0.08")),
)
# Each stream's spend is split among the subjects in these proportions.
SUBJECTS = {"cust-a": Decimal("0.6"), "cust-b": Decimal("0.3"), "cust-c": Decimal("0.1")}


def season(hour: datetime) -> Decimal:
    """Office hours (08-19 UTC) at full rate, nights at 30 %, weekends at 40 % of that."""
    daily = Decimal(1) if 8 <= hour.hour < 19 else Decimal("0.3")
    weekly = Decimal("0.4") if hour.weekday() >= 5 else Decimal(1)
    return daily * weekly


def entry(
    hour: datetime,
    *,
    key: str,
    amount: Decimal,
    provider: str,
    model: str,
    service: str,
    subject: str,
    operation: str = "chat",
    outcome: str = "success",
    **quantities: int,
) -> CostEntry:
    return CostEntry(
        occurred_at=hour + timedelta(minutes=17),
        provider=provider,
        model=model,
        operation=operation,
        service=service,
        subject=subject,
        amount=amount.quantize(Decimal("1E-9")),
        pricing_status=PricingStatus.EXPLICIT,
        is_estimate=False,
        outcome=outcome,
        idempotency_key=key,
        **quantities,
    )


def seasonal_entries(
    *,
    end: datetime = T0,
    days: int = HISTORY_DAYS,
    streams: Iterable[Stream] = STREAMS,
    noise: float = 0.10,
    growth_per_day: Decimal = Decimal(0),
    seed: int = 1,
    skip: set[tuple[str, datetime]] | None = None,
    last_hours: int | None = None,
) -> list[CostEntry]:
    """One entry per stream, subject and hour over the `days` days before `end`: office-hour and
    weekday rhythm, multiplicative noise of +/- `noise`, optional linear growth per day.

    last_hours=N keeps only the hours of the week of the last N hours (the anomaly detector
    compares an hour with the same hour of earlier weeks only): a seventh of the rows for N=24.
    """
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    keep = None
    if last_hours is not None:
        keep = {(h.weekday(), h.hour) for h in (end - HOUR * (i + 1) for i in range(last_hours))}
    entries = []
    hour = start - HOUR
    while hour + HOUR < end:
        hour += HOUR
        if keep is not None and (hour.weekday(), hour.hour) not in keep:
            continue
        day_index = Decimal((hour - start) // timedelta(days=1))
        level = season(hour) * (1 + growth_per_day * day_index)
        for stream in streams:
            if skip and (stream.model, hour) in skip:
                continue
            for subject, share in SUBJECTS.items():
                wobble = Decimal(str(round(1 + rng.uniform(-noise, noise), 4)))
                entries.append(
                    entry(
                        hour,
                        key=f"gen:{seed}:{stream.model}:{subject}:{hour:%Y%m%d%H}",
                        amount=stream.hourly * share * level * wobble,
                        provider=stream.provider,
                        model=stream.model,
                        operation=stream.operation,
                        service=stream.service,
                        subject=subject,
                    )
                )
    return entries


def write(entries: list[CostEntry]) -> None:
    CostEntry.objects.bulk_create(entries, batch_size=1000)
    rollups_rebuild()


@pytest.fixture
def catalog(db):
    """Which provider prices which model (the attribution limits a provider's models to these)."""
    for stream in STREAMS:
        PriceFactory(provider=stream.provider, model=stream.model, operation=stream.operation)
    return STREAMS
