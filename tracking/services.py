"""The ledger's verbs: recording usage, correcting an entry, rebuilding the rollups. Each runs in
one transaction.

Recording usage has one implementation, :func:`cost_entry_record_many` (a batch, as the HTTP API
sends them); :func:`cost_entry_record` records a batch of one. The events are validated
(tracking.events), then, in one transaction: priced with the versions in force at each event's
time (one price query per batch), the new entries inserted (bulk_create), and added to the hourly
and daily rollups and the metric series (tracking.rollups.rollups_add). The idempotency key is
unique in the database: a key recorded before, earlier in the same batch, or by a concurrent
writer counts once and is answered with the entry that holds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.models import Team
from core.money import parse_money

from .events import UsageEvent, usage_event_clean, usage_event_conflicts
from .models import CostEntry, MetricSeries, Price, PricingStatus, SpendRollup, SpendRollupDay
from .pricing import PriceBook
from .rollups import SeriesKey, metric_series_deltas, rollup_deltas, rollups_add
from .selectors import event_quote, ledger_rollup_totals
from .signals import usage_recorded

# Below this, a reported cost that differs from ours is another tool's float rounding, not a difference.
REPORTED_COST_ROUNDING = Decimal("0.000001")


@dataclass(frozen=True)
class RecordResult:
    entry: CostEntry
    created: bool


@dataclass(frozen=True)
class BulkItemResult:
    """One event of a batch: accepted (a new entry), duplicate (the existing entry), or rejected."""

    status: str  # "accepted" | "duplicate" | "rejected"
    entry: CostEntry | None = None
    errors: dict[str, list[str]] | None = None
    code: str = ""  # "idempotency_conflict": rejected because its key was recorded with other fields


class IdempotencyConflict(ValidationError):
    """The idempotency key was recorded before with other fields (a bug in the caller, never a retry)."""


# A batch one of whose keys a concurrent writer committed between the look-up and the insert
# (the unique constraint refuses it) is redone with a fresh look-up, which finds that key. Each
# failure means another writer committed one of the batch's keys in between: a few attempts do.
_ATTEMPTS = 5


def cost_entry_record(**raw: Any) -> RecordResult:
    """Record one usage event. Keyword arguments are the event's fields (see usage_event_clean).

    Returns the entry and whether it was created (False: the idempotency key was seen before).
    Raises ValidationError naming the field for bad input; nothing is written then.
    """
    [item] = cost_entry_record_many([raw])
    if item.status == "rejected":
        raise (IdempotencyConflict if item.code else ValidationError)(item.errors)
    assert item.entry is not None
    return RecordResult(item.entry, created=item.status == "accepted")


def cost_entry_record_many(events: Sequence[Mapping[str, Any]]) -> list[BulkItemResult]:
    """Record a batch. Each event is accepted, a duplicate, or rejected with its field errors.

    Valid events are written in one transaction; rejected ones change nothing.
    """
    now = timezone.now()
    team_names = {str(e.get("team")) for e in events if isinstance(e, Mapping) and e.get("team") not in (None, "")}
    teams = {t.name: t for t in Team.objects.filter(name__in=team_names)} if team_names else {}
    results: list[BulkItemResult | None] = [None] * len(events)
    cleaned: list[tuple[int, UsageEvent]] = []
    for i, raw in enumerate(events):
        if not isinstance(raw, Mapping):
            results[i] = BulkItemResult("rejected", errors={"__all__": ["must be an object"]})
            continue
        try:
            cleaned.append((i, usage_event_clean(raw, now=now, teams=teams)))
        except ValidationError as exc:
            results[i] = BulkItemResult("rejected", errors=exc.message_dict)
    if cleaned:
        for attempt in range(_ATTEMPTS):
            try:
                with transaction.atomic():
                    written, new = _events_write(cleaned)
                break
            except IntegrityError:
                if attempt + 1 == _ATTEMPTS:
                    raise
        for i, result in written.items():
            results[i] = result
        _announce(new)
    return [r for r in results if r is not None]


def _events_write(cleaned: Sequence[tuple[int, UsageEvent]]) -> tuple[dict[int, BulkItemResult], list[CostEntry]]:
    """Price the events, insert those whose key is new and add them to the rollups, inside the
    caller's transaction. Returns each event's result by its index, and the new entries."""
    book = PriceBook.load({(event.provider, event.model) for _, event in cleaned})
    unknown = _providers_unknown({e.provider for _, e in cleaned if not book.has_model(e.provider, e.model)})
    results: dict[int, BulkItemResult] = {}
    priced: list[tuple[int, CostEntry]] = []
    events = dict(cleaned)
    for i, event in cleaned:
        if event.provider in unknown:
            error = f"unknown provider {event.provider!r} (not in the price catalog)"
            results[i] = BulkItemResult("rejected", errors={"provider": [error]})
            continue
        try:
            priced.append((i, _entry_from_event(event, book)))
        except ValidationError as exc:  # e.g. a cost beyond what a ledger entry holds
            results[i] = BulkItemResult("rejected", errors=exc.message_dict)
    keys = [entry.idempotency_key for _, entry in priced]
    # The keys recorded before, then those entries only: most batches have none.
    taken = list(CostEntry.objects.filter(idempotency_key__in=keys).values_list("pk", flat=True)) if keys else []
    existing = {e.idempotency_key: e for e in CostEntry.objects.filter(pk__in=taken)} if taken else {}
    fresh: dict[str, CostEntry] = {}
    for i, entry in priced:
        key = entry.idempotency_key
        holder = existing.get(key) or fresh.get(key)
        if holder is not None and (differ := usage_event_conflicts(events[i], entry, holder)):
            error = f"was recorded before with other values of {', '.join(differ)}"
            results[i] = BulkItemResult("rejected", errors={"idempotency_key": [error]}, code="idempotency_conflict")
        elif holder is not None:
            results[i] = BulkItemResult("duplicate", entry=holder)
        else:
            fresh[key] = entry
            results[i] = BulkItemResult("accepted", entry=entry)
    # Lock order, so concurrent writers never deadlock: ledger keys in sorted order first, then
    # the rollup rows (sorted by rollups_add); never a ledger key while holding rollup rows.
    new = [fresh[key] for key in sorted(fresh)]
    CostEntry.objects.bulk_create(new)
    rollups_add(rollup_deltas(new), series=metric_series_deltas(new))
    return results, new


def _providers_unknown(providers: set[str]) -> set[str]:
    """Those of `providers` the catalog prices nothing of (a typo such as 'opneai'), in one query."""
    providers = providers - set(settings.COSTCONTROL_EXTRA_PROVIDERS)
    if not providers:
        return set()
    known = Price.objects.filter(provider__in=providers).order_by().values_list("provider", flat=True).distinct()
    return providers - set(known)


def _entry_from_event(event: UsageEvent, book: PriceBook) -> CostEntry:
    quote = event_quote(event, book)
    note = ""
    if event.usage_unavailable:
        # Counted as unpriced (reported, alerted on), never as a silent zero.
        amount, currency, status, prices_used = Decimal(0), event.currency, PricingStatus.UNPRICED, {}
        is_estimate, note = True, "usage unavailable: the provider reported no usage for this call"
    elif event.amount is not None:
        amount, currency, status, prices_used = event.amount, event.currency, PricingStatus.EXPLICIT, {}
        is_estimate = False if event.is_estimate is None else event.is_estimate
    else:
        amount, currency, status, prices_used = quote.amount, quote.currency, quote.status, quote.prices_used
        is_estimate = True if event.is_estimate is None else event.is_estimate
    return CostEntry(
        reported_amount=event.reported_amount,
        reported_by=event.reported_by,
        reported_differs=reported_cost_differs(amount, event.reported_amount),
        aggregated=event.aggregated,
        occurred_at=event.occurred_at,
        provider=event.provider,
        model=event.model,
        operation=quote.operation,
        variant=event.variant,
        service_tier=event.service_tier,
        region=event.region,
        speed=event.speed,
        service=event.service,
        subject=event.subject,
        job=event.job,
        team=event.team,
        tags=event.tags,
        amount=amount,
        currency=currency,
        pricing_status=status,
        prices_used=prices_used,
        is_estimate=is_estimate,
        outcome=event.outcome,
        duration_ms=event.duration_ms,
        idempotency_key=event.idempotency_key,
        note=note,
        **event.quantities,
    )


def reported_cost_differs(amount: Decimal, reported: Decimal | None) -> bool | None:
    """Whether a cost the sender reported differs from ours by more than REPORTED_COST_TOLERANCE_PERCENT
    of ours, and by more than a millionth (another tool's float rounding); None when none was reported."""
    if reported is None:
        return None
    difference = abs(reported - amount)
    return difference > REPORTED_COST_ROUNDING and difference * 100 > amount * settings.REPORTED_COST_TOLERANCE_PERCENT


def _announce(entries: Sequence[CostEntry]) -> None:
    """usage_recorded, after commit (at once outside a transaction); free when nobody listens."""
    if entries and usage_recorded.has_listeners(CostEntry):
        transaction.on_commit(lambda: usage_recorded.send(sender=CostEntry, entries=entries))


def cost_entry_correct(*, entry: CostEntry, amount: Any, note: str, idempotency_key: str | None = None) -> RecordResult:
    """Set what an entry really cost by appending a correcting entry (the ledger is append-only).

    `amount` is the corrected total; the new entry holds the difference from the current total
    (the original plus earlier corrections), references the original, and lands in the
    original's hour so spend-by-hour tells the truth.
    """
    corrected_total = parse_money(amount, field="amount")
    if corrected_total < 0:
        raise ValidationError({"amount": "the corrected total must not be negative"})
    note = (note or "").strip()
    if not note:
        raise ValidationError({"note": "say why the entry is corrected"})
    if len(note) > 500:
        raise ValidationError({"note": "is longer than 500 characters"})
    original = entry if entry.corrects_id is None else entry.corrects
    key = idempotency_key or f"correction:{original.pk}:{uuid.uuid4().hex}"
    try:
        with transaction.atomic():
            # Serialise corrections of one entry (PostgreSQL row lock; SQLite holds its write lock).
            original = CostEntry.objects.select_for_update().get(pk=original.pk)
            already = CostEntry.objects.filter(idempotency_key=key).first()
            if already is not None:  # a resubmitted correction (double click, retry)
                return RecordResult(already, created=False)
            current = original.amount + sum((c.amount for c in original.corrections.all()), Decimal(0))
            if corrected_total == current:
                raise ValidationError({"amount": f"{corrected_total} is already the entry's total; nothing to correct"})
            correction = CostEntry(
                occurred_at=original.occurred_at,
                provider=original.provider,
                model=original.model,
                operation=original.operation,
                variant=original.variant,
                service=original.service,
                subject=original.subject,
                job=original.job,
                team=original.team,
                tags=original.tags,
                amount=corrected_total - current,
                currency=original.currency,
                pricing_status=PricingStatus.EXPLICIT,
                is_estimate=False,
                outcome=original.outcome,
                idempotency_key=key,
                corrects=original,
                note=note,
            )
            correction.save(force_insert=True)
            rollups_add(rollup_deltas([correction]), series=metric_series_deltas([correction]))
    except IntegrityError:
        existing = CostEntry.objects.filter(idempotency_key=key).first()
        if existing is None:
            raise
        return RecordResult(existing, created=False)
    return RecordResult(correction, created=True)


def rollups_rebuild(*, progress: Callable[[int], None] | None = None) -> int:
    """Recompute every rollup (and every MetricSeries row) from the ledger, atomically; returns the
    number of hourly rollup rows.

    Writers are held off while it runs (PostgreSQL: a SHARE lock on the ledger; SQLite: the
    write lock), so no entry is counted twice or missed.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {CostEntry._meta.db_table} IN SHARE MODE")
        series: dict[SeriesKey, list[Any]] = {}
        expected = ledger_rollup_totals(series=series, progress=progress)
        SpendRollup.objects.all().delete()
        SpendRollupDay.objects.all().delete()
        MetricSeries.objects.all().delete()
        rollups_add(expected, series=series)
    return len(expected)
