"""The verbs that change what was spent. Each runs in one transaction.

Recording usage: :func:`cost_entry_record` (one event) and :func:`cost_entry_record_many`
(a batch, as the HTTP API sends them). Both validate, price with the catalog version in
force at the event's time, insert the ledger row and add it to the hourly rollups of every
scope it belongs to, in the same transaction. The idempotency key is unique in the
database; a second recording of a key returns the first entry and changes nothing.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.db.models.base import ModelState
from django.utils import timezone

from core.db import fetch_all_prepared
from core.models import Team
from core.money import parse_currency, parse_decimal, parse_money, to_nanos
from core.validation import clean_text

from .ingest import entries_copy_insert, entry_row
from .models import (
    DECIMAL_QUANTITY_FIELDS,
    DURATION_BUCKETS_MS,
    INTEGER_QUANTITY_FIELDS,
    ROLLUP_COUNTERS,
    SERIES_COUNTERS,
    SERIES_KEY,
    TOKEN_FIELDS,
    CostEntry,
    MetricSeries,
    Outcome,
    Price,
    PriceCatalogState,
    PricingStatus,
    SpendRollup,
    SpendRollupDay,
)
from .pricing import PriceBook, price_books
from .signals import usage_recorded

QUANTITY_FIELDS = INTEGER_QUANTITY_FIELDS + DECIMAL_QUANTITY_FIELDS
_LIMITS = {"provider": 100, "model": 200, "operation": 50, "variant": 100, "service": 100, "subject": 200, "job": 200}
_DECIMAL_QUANTITY_PLACES = {"seconds": 6, "gpu_hours": 9}
TAG_KEY_MAX, TAG_VALUE_MAX, TAGS_MAX = 50, 100, 20


@dataclass
class UsageEvent:
    """A validated usage event, ready to be priced and written."""

    provider: str
    model: str
    occurred_at: datetime
    idempotency_key: str
    operation: str = ""
    variant: str = ""
    service: str = ""
    subject: str = ""
    job: str = ""
    team: Team | None = None
    tags: dict[str, str] = field(default_factory=dict)
    quantities: dict[str, Any] = field(default_factory=dict)
    amount: Decimal | None = None
    currency: str = "USD"
    outcome: str = Outcome.SUCCESS
    duration_ms: int | None = None
    is_estimate: bool | None = None
    usage_unavailable: bool = False  # the call happened but reported no usage (e.g. a stream without it)


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


# --- validation ----------------------------------------------------------------

_OUTCOMES = frozenset(Outcome.values)  # Outcome.values builds its list on every access


def _text(raw: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    return clean_text(raw.get(name), field=name, max_length=_LIMITS[name], required=required)


def _quantity(raw: Mapping[str, Any], name: str) -> int | Decimal:
    value = raw.get(name)
    if value is None:
        return 0
    if name in INTEGER_QUANTITY_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValidationError({name: f"must be finite, got {value}"})
            raise ValidationError({name: f"must be a non-negative integer, got {value!r}"})
        if value < 0:
            raise ValidationError({name: f"must be a non-negative integer, got {value}"})
        if value >= 2**63:
            raise ValidationError({name: f"{value} is out of range"})
        return value
    number = parse_decimal(value, field=name)
    if number < 0:
        raise ValidationError({name: f"must not be negative, got {value}"})
    places = _DECIMAL_QUANTITY_PLACES[name]
    # Range first: quantizing a huge value (5E+307) to `places` exceeds the context's precision.
    if number >= Decimal(10) ** 12:
        raise ValidationError({name: f"{value} is out of range"})
    if number != number.quantize(Decimal(1).scaleb(-places)):
        raise ValidationError({name: f"{value} has more than {places} decimal places"})
    return number


def _tags(raw: Mapping[str, Any]) -> dict[str, str]:
    value = raw.get("tags") or {}
    if not isinstance(value, Mapping):
        raise ValidationError({"tags": "must be an object of key -> value strings"})
    if len(value) > TAGS_MAX:
        raise ValidationError({"tags": f"at most {TAGS_MAX} tags per event"})
    tags: dict[str, str] = {}
    for key, tag_value in value.items():
        if not isinstance(key, str) or not key.strip() or "=" in key or len(key) > TAG_KEY_MAX:
            raise ValidationError({"tags": f"tag key {key!r} must be 1-{TAG_KEY_MAX} characters without '='"})
        if not isinstance(tag_value, str) or len(tag_value) > TAG_VALUE_MAX:
            raise ValidationError(
                {"tags": f"tag {key!r} must have a string value of at most {TAG_VALUE_MAX} characters"}
            )
        tags[key.strip()] = tag_value.strip()
    return tags


def _occurred_at(raw: Mapping[str, Any], now: datetime) -> datetime:
    value = raw.get("occurred_at")
    if value is None:
        return now
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError({"occurred_at": f"{value!r} is not an ISO-8601 timestamp"}) from None
    if not isinstance(value, datetime):
        raise ValidationError({"occurred_at": "must be a timestamp"})
    if timezone.is_naive(value):
        raise ValidationError({"occurred_at": "must include a time zone offset (e.g. 2026-11-23T10:00:00+00:00)"})
    skew = timedelta(seconds=settings.COSTCONTROL_MAX_FUTURE_SKEW_SECONDS)
    if value > now + skew:
        raise ValidationError({"occurred_at": f"{value.isoformat()} is more than {skew} in the future"})
    return value


def usage_event_clean(
    raw: Mapping[str, Any], *, now: datetime | None = None, teams: Mapping[str, Team] | None = None
) -> UsageEvent:
    """Validate one raw event (strings, numbers, Decimals). Raises ValidationError naming the field."""
    now = now or timezone.now()
    known = {
        "provider",
        "model",
        "operation",
        "variant",
        "service",
        "subject",
        "job",
        "team",
        "tags",
        "amount",
        "currency",
        "outcome",
        "duration_ms",
        "is_estimate",
        "usage_unavailable",
        "idempotency_key",
        "occurred_at",
        *QUANTITY_FIELDS,
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValidationError({unknown[0]: "is not a known field"})
    event = UsageEvent(
        provider=_text(raw, "provider", required=True).lower(),
        model=_text(raw, "model", required=True),
        operation=_text(raw, "operation"),
        variant=_text(raw, "variant"),
        service=_text(raw, "service"),
        subject=_text(raw, "subject"),
        job=_text(raw, "job"),
        occurred_at=_occurred_at(raw, now),
        idempotency_key="",
        tags=_tags(raw),
        quantities={name: _quantity(raw, name) for name in QUANTITY_FIELDS},
    )
    key = raw.get("idempotency_key")
    if key is None or key == "":
        event.idempotency_key = uuid.uuid4().hex
    elif not isinstance(key, str) or len(key) > 200:
        raise ValidationError({"idempotency_key": "must be a string of at most 200 characters"})
    else:
        event.idempotency_key = key
    if raw.get("amount") is not None:
        event.amount = parse_money(raw["amount"], field="amount")
        if event.amount < 0:
            raise ValidationError({"amount": "must not be negative (corrections are made with cost_entry_correct)"})
    event.currency = parse_currency(raw.get("currency") or "USD")
    outcome = raw.get("outcome") or Outcome.SUCCESS
    if outcome not in _OUTCOMES:
        raise ValidationError({"outcome": f"{outcome!r} is not one of {', '.join(Outcome.values)}"})
    event.outcome = outcome
    duration = raw.get("duration_ms")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int) or not 0 <= duration < 2**31:
            raise ValidationError(
                {"duration_ms": f"must be a non-negative integer number of milliseconds, got {duration!r}"}
            )
        event.duration_ms = duration
    if raw.get("is_estimate") is not None:
        if not isinstance(raw["is_estimate"], bool):
            raise ValidationError({"is_estimate": "must be true or false"})
        event.is_estimate = raw["is_estimate"]
    if raw.get("usage_unavailable") is not None:
        if not isinstance(raw["usage_unavailable"], bool):
            raise ValidationError({"usage_unavailable": "must be true or false"})
        event.usage_unavailable = raw["usage_unavailable"]
        if event.usage_unavailable and (event.amount is not None or any(event.quantities.values())):
            raise ValidationError({"usage_unavailable": "an event without usage carries no quantities or amount"})
    team = raw.get("team")
    if team not in (None, ""):
        if isinstance(team, Team):
            event.team = team
        else:
            found = (teams or {}).get(str(team)) if teams is not None else Team.objects.filter(name=str(team)).first()
            if found is None:
                raise ValidationError({"team": f"unknown team {team!r}"})
            event.team = found
    return event


def _provider_known(provider: str) -> bool:
    return provider in settings.COSTCONTROL_EXTRA_PROVIDERS or Price.objects.filter(provider=provider).exists()


# --- building entries and rollups -------------------------------------------------


def _entry_from_event(event: UsageEvent, book: PriceBook) -> CostEntry:
    quote = book.quote(
        provider=event.provider,
        model=event.model,
        operation=event.operation,
        variant=event.variant,
        at=event.occurred_at,
        quantities=event.quantities,
    )
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
    return _entry_new(
        occurred_at=event.occurred_at,
        provider=event.provider,
        model=event.model,
        operation=quote.operation,
        variant=event.variant,
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


# (attname, default, whether the default is called): CostEntry's fields, for _entry_new.
_ENTRY_DEFAULTS = tuple(
    (f.attname, f.default, True) if f.has_default() and callable(f.default) else (f.attname, f.get_default(), False)
    for f in CostEntry._meta.concrete_fields
)


_ENTRY_CONSTANT_DEFAULTS = {attname: default for attname, default, call in _ENTRY_DEFAULTS if not call}
_ENTRY_CALLED_DEFAULTS = tuple((attname, default) for attname, default, call in _ENTRY_DEFAULTS if call)


def _entry_new(*, team: Team | None = None, **values: Any) -> CostEntry:
    """CostEntry(**values) without Model.__init__'s per-field work (a sixth of a batch's Python
    time): defaults filled in, then the values; the team through its id and the relation cache.
    CostEntry has no pre_init/post_init receivers (__init__ would send those)."""
    entry = CostEntry.__new__(CostEntry)
    state = entry._state = ModelState()
    data = entry.__dict__
    data.update(_ENTRY_CONSTANT_DEFAULTS)
    for attname, default in _ENTRY_CALLED_DEFAULTS:
        if attname not in values:
            data[attname] = default()
    data.update(values)
    if team is not None:
        data["team_id"] = team.pk
        state.fields_cache["team"] = team
    return entry


def entry_scopes(entry: CostEntry) -> list[str]:
    """Every scope an entry counts towards (the rollup keys; budgets choose among them)."""
    scopes = ["global", f"provider:{entry.provider}", f"model:{entry.model}"]
    if entry.operation:
        scopes.append(f"operation:{entry.operation}")  # the daily report's breakdown by operation
    if entry.service:
        scopes.append(f"service:{entry.service}")
    if entry.subject:
        scopes.append(f"subject:{entry.subject}")
    if entry.job:
        scopes.append(f"job:{entry.job}")
    if entry.team_id:
        team_name = entry.team.name if entry.team is not None else Team.objects.get(pk=entry.team_id).name
        scopes.append(f"team:{team_name}")
    scopes.extend(f"tag:{key}={value}" for key, value in sorted((entry.tags or {}).items()))
    return scopes


def hour_bucket(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def entry_counters(entry: CostEntry) -> tuple[Any, ...]:
    """The amounts an entry adds to each of its rollups, in ROLLUP_COUNTERS order.

    A correction adds its amount but is not another event.
    """
    is_event = entry.corrects_id is None
    return (
        entry.amount,
        int(is_event),
        int(is_event and entry.outcome == Outcome.ERROR),
        int(is_event and entry.outcome == Outcome.RATE_LIMITED),
        int(is_event and entry.pricing_status == PricingStatus.UNPRICED),
        *(getattr(entry, name) for name in TOKEN_FIELDS),
    )


def rollup_deltas(entries: Iterable[CostEntry]) -> dict[tuple[str, datetime, str], list[Any]]:
    # Each key's counter tuples are collected, then summed column by column (sum() and zip() loop
    # in C): a batch of 500 entries touches ~4,000 (scope, hour) keys.
    collected: dict[tuple[str, datetime, str], list[tuple[Any, ...]]] = {}
    for entry in entries:
        counters = entry_counters(entry)
        bucket = hour_bucket(entry.occurred_at)
        currency = entry.currency
        for scope in entry_scopes(entry):
            key = (scope, bucket, currency)
            rows = collected.get(key)
            if rows is None:
                collected[key] = [counters]
            else:
                rows.append(counters)
    return {
        key: list(rows[0]) if len(rows) == 1 else [sum(column) for column in zip(*rows, strict=True)]
        for key, rows in collected.items()
    }


_UPSERT_CHUNK = 500


def day_bucket(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def daily_deltas(
    deltas: Mapping[tuple[str, datetime, str], Sequence[Any]],
) -> dict[tuple[str, datetime, str], list[Any]]:
    """Hourly deltas (or totals) folded into UTC days."""
    days: dict[tuple[str, datetime, str], list[Any]] = {}
    for (scope, bucket, currency), counters in deltas.items():
        key = (scope, day_bucket(bucket), currency)
        current = days.get(key)
        if current is None:
            days[key] = list(counters)
        else:
            for i, value in enumerate(counters):
                current[i] += value
    return days


def _counters_upsert(
    model: type[models.Model],
    key_columns: Sequence[str],
    counters: Sequence[str],
    rows: Mapping[tuple[Any, ...], Sequence[Any]],
) -> None:
    """Add counter deltas to the rows of `model`'s table keyed by `key_columns` (amount first, in
    nano-units) with an atomic INSERT ... ON CONFLICT DO UPDATE, in sorted key order (the lock order).

    On PostgreSQL one statement whatever the number of rows: a column of values per array
    parameter (unnest), prepared once per connection. Elsewhere one VALUES list per chunk.
    """
    table = model._meta.db_table
    columns = (*key_columns, *counters)
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counters)
    conflict = f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET {updates}"
    money = SpendRollup._meta.get_field("amount").get_prep_value  # every counters table's amount is a MoneyField
    keys = sorted(rows)
    if connection.vendor == "postgresql":
        arrays: list[list[Any]] = [[] for _ in columns]
        for key in keys:
            amount, *counts = rows[key]
            for array, value in zip(arrays, (*key, money(amount), *counts), strict=True):
                array.append(value)
        [(written,)] = fetch_all_prepared(_unnest_upsert_sql(model, columns, conflict), arrays)
        assert written == len(keys), (table, written, len(keys))
        return
    ops = connection.ops
    with connection.cursor() as cursor:
        for start in range(0, len(keys), _UPSERT_CHUNK):
            chunk = keys[start : start + _UPSERT_CHUNK]
            params: list[Any] = []
            for key in chunk:
                amount, *counts = rows[key]
                key_values = (ops.adapt_datetimefield_value(v) if isinstance(v, datetime) else v for v in key)
                params.extend((*key_values, money(amount), *counts))
            row = "(" + ", ".join(["%s"] * len(columns)) + ")"
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * len(chunk))} {conflict}", params
            )


@cache
def _unnest_upsert_sql(model: type[models.Model], columns: tuple[str, ...], conflict: str) -> str:
    arrays = ", ".join(f"%s::{model._meta.get_field(c).db_type(connection)}[]" for c in columns)
    return (
        f"WITH written AS (INSERT INTO {model._meta.db_table} ({', '.join(columns)})"
        f" SELECT * FROM unnest({arrays}) {conflict} RETURNING 1) SELECT count(*) FROM written"
    )


_ROLLUP_KEY = ("scope", "bucket", "currency")


SeriesKey = tuple[str, str, str, str, str]  # MetricSeries: provider, service, operation, model, currency


def entry_series_counters(entry: CostEntry) -> tuple[Any, ...]:
    """What an entry adds to its MetricSeries row, in SERIES_COUNTERS order: the rollup counters, then
    the request-duration histogram (a request that reported its duration; corrections are not requests)."""
    timed = entry.corrects_id is None and entry.duration_ms is not None
    duration = entry.duration_ms if timed else 0
    return (
        *entry_counters(entry),
        int(timed),
        duration,
        *(int(timed and duration <= bound) for bound in DURATION_BUCKETS_MS),
    )


def series_key(entry: CostEntry) -> SeriesKey:
    return (entry.provider, entry.service, entry.operation, entry.model, entry.currency)


def metric_series_deltas(entries: Iterable[CostEntry]) -> dict[SeriesKey, list[Any]]:
    deltas: dict[SeriesKey, list[Any]] = {}
    for entry in entries:
        key, counters = series_key(entry), entry_series_counters(entry)
        current = deltas.get(key)
        if current is None:
            deltas[key] = list(counters)
        else:
            for i, value in enumerate(counters):
                current[i] += value
    return deltas


def _rollups_add(
    deltas: Mapping[tuple[str, datetime, str], Sequence[Any]], *, series: Mapping[SeriesKey, Sequence[Any]]
) -> None:
    """Add hourly deltas to the hourly and the daily rollups, and the same entries' series deltas
    (metric_series_deltas) to their MetricSeries rows, with one atomic upsert per chunk
    (amount = amount + excluded.amount).

    Lock order, the same in every writer so that concurrent ones never deadlock: every hourly row
    first, then every daily row, then every series row, each in sorted key order.
    """
    if deltas:
        _counters_upsert(SpendRollup, _ROLLUP_KEY, ROLLUP_COUNTERS, deltas)
        _counters_upsert(SpendRollupDay, _ROLLUP_KEY, ROLLUP_COUNTERS, daily_deltas(deltas))
    if series:
        _counters_upsert(MetricSeries, SERIES_KEY, SERIES_COUNTERS, series)


_INSERTED, _DUPLICATE, _STALE_PRICES = "inserted", "duplicate", "stale prices"


_ENTRY_FIELDS = tuple(f for f in CostEntry._meta.concrete_fields if not f.primary_key)


@cache
def _record_statement() -> str:
    """The record statement's text, built once. Every parameter carries its type (a cast), so it is
    prepared on the server once per connection (core.db.fetch_all_prepared) and then only
    executed: parsing and planning it cost more than running it."""
    fields = _ENTRY_FIELDS
    entry_table, rollup_table = CostEntry._meta.db_table, SpendRollup._meta.db_table
    day_table = SpendRollupDay._meta.db_table
    counter_columns = ", ".join(ROLLUP_COUNTERS)
    hour_updates = ", ".join(f"{c} = {rollup_table}.{c} + excluded.{c}" for c in ROLLUP_COUNTERS)
    day_updates = ", ".join(f"{c} = {day_table}.{c} + excluded.{c}" for c in ROLLUP_COUNTERS)
    series_table = MetricSeries._meta.db_table
    series_updates = ", ".join(f"{c} = m.{c} + excluded.{c}" for c in SERIES_COUNTERS)
    state_table = PriceCatalogState._meta.db_table
    typed_fields = ", ".join(f"%s::{f.db_type(connection)}" for f in fields)
    counters = ", ".join(["%s::bigint"] * len(ROLLUP_COUNTERS))
    series_key = ", ".join(["%s::varchar"] * len(SERIES_KEY))
    series_counters = ", ".join(["%s::bigint"] * len(SERIES_COUNTERS))
    return (
        f"WITH token AS (SELECT COALESCE((SELECT token FROM {state_table} WHERE id = 1), '') AS value"
        f"), new_entry AS ("
        f" INSERT INTO {entry_table} ({', '.join(f.column for f in fields)})"
        f" SELECT {typed_fields} FROM token WHERE token.value = %s::text"
        f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
        f"), rollups AS ("
        f" INSERT INTO {rollup_table} (scope, bucket, currency, {counter_columns})"
        f" SELECT scope, %s::timestamptz, %s::varchar, {counters}"
        f" FROM unnest(%s::varchar[]) WITH ORDINALITY AS s(scope, n)"
        f" WHERE EXISTS (SELECT 1 FROM new_entry) ORDER BY n"
        f" ON CONFLICT (scope, bucket, currency) DO UPDATE SET {hour_updates} RETURNING 1"
        f"), day_rollups AS ("
        f" INSERT INTO {day_table} (scope, bucket, currency, {counter_columns})"
        f" SELECT scope, %s::timestamptz, %s::varchar, {counters}"
        f" FROM unnest(%s::varchar[]) WITH ORDINALITY AS s(scope, n)"
        f" WHERE (SELECT count(*) FROM rollups) > 0 ORDER BY n"
        f" ON CONFLICT (scope, bucket, currency) DO UPDATE SET {day_updates} RETURNING 1"
        f"), series AS ("
        f" INSERT INTO {series_table} AS m ({', '.join(SERIES_KEY)}, {', '.join(SERIES_COUNTERS)})"
        f" SELECT {series_key}, {series_counters}"
        f" WHERE (SELECT count(*) FROM day_rollups) > 0"
        f" ON CONFLICT ({', '.join(SERIES_KEY)}) DO UPDATE SET {series_updates}"
        f") SELECT (SELECT id FROM new_entry), token.value FROM token"
    )


def _entry_insert_postgresql(entry: CostEntry, *, catalog_token: str) -> str:
    """PostgreSQL: check the prices, insert the entry and add it to its rollups in ONE statement.

    A data-modifying CTE is atomic on its own (no BEGIN/COMMIT round trips) and adds to the
    rollups only when the entry was really inserted: a duplicate idempotency key inserts and
    adds nothing. The entry was priced from a cached price book; the statement inserts only if
    the catalog token is still the one that book was read under, in the same snapshot as the
    insert, so a price change is never missed ("stale prices": re-price and retry).
    Scopes are sorted, the daily rows wait for the hourly ones (count(*) FROM rollups) and the
    MetricSeries row for the daily ones (count(*) FROM day_rollups), so concurrent writers lock
    rows in the same order as _rollups_add.
    This is the same write as the portable path (ORM insert + _rollups_add); the whole suite
    runs on both databases and verify_ledger compares ledger and rollups.
    """
    if entry.recorded_at is None:
        entry.recorded_at = timezone.now()  # auto_now_add, as Model.save would
    values = entry_row(entry)
    amount, *counts = entry_counters(entry)
    scopes = sorted(entry_scopes(entry))
    series_counters = entry_series_counters(entry)[len(ROLLUP_COUNTERS) :]
    sql = _record_statement()
    counters = [to_nanos(amount), *counts]
    params = [
        *values,
        catalog_token,
        hour_bucket(entry.occurred_at),
        entry.currency,
        *counters,
        scopes,
        day_bucket(entry.occurred_at),
        entry.currency,
        *counters,
        scopes,
        *series_key(entry),
        *counters,
        *series_counters,
    ]
    [(entry_id, current_token)] = fetch_all_prepared(sql, params)
    if entry_id is None:
        return _DUPLICATE if current_token == catalog_token else _STALE_PRICES
    entry.pk = entry_id
    entry._state.adding = False
    return _INSERTED


# --- the verbs ------------------------------------------------------------------------


def cost_entry_record(**raw: Any) -> RecordResult:
    """Record one usage event. Keyword arguments are the event's fields (see usage_event_clean).

    Returns the entry and whether it was created (False: the idempotency key was seen before).
    Raises ValidationError naming the field for bad input; nothing is written then.
    """
    event = usage_event_clean(raw)
    postgresql = connection.vendor == "postgresql"
    # PostgreSQL checks a cached book's token inside the write statement; SQLite checks it first.
    get_book = price_books.get if postgresql else price_books.fresh
    book = get_book(event.provider, event.model)
    if not book.has_model(event.provider, event.model):
        book = price_books.reload(event.provider, event.model)
        if not book.has_model(event.provider, event.model) and not _provider_known(event.provider):
            raise ValidationError({"provider": f"unknown provider {event.provider!r} (not in the price catalog)"})
    if postgresql:
        for _ in range(5):
            entry = _entry_from_event(event, book)
            outcome = _entry_insert_postgresql(entry, catalog_token=book.token)
            if outcome == _INSERTED:
                _announce([entry])
                return RecordResult(entry, created=True)
            if outcome == _DUPLICATE:
                return RecordResult(CostEntry.objects.get(idempotency_key=event.idempotency_key), created=False)
            book = price_books.reload(event.provider, event.model)
        raise RuntimeError("the price catalog changed five times while recording one event")
    entry = _entry_from_event(event, book)
    try:
        with transaction.atomic():
            entry.save(force_insert=True)
            _rollups_add(rollup_deltas([entry]), series=metric_series_deltas([entry]))
    except IntegrityError:
        existing = CostEntry.objects.filter(idempotency_key=event.idempotency_key).first()
        if existing is None:
            raise
        return RecordResult(existing, created=False)
    _announce([entry])
    return RecordResult(entry, created=True)


def _announce(entries: Sequence[CostEntry]) -> None:
    """usage_recorded, after commit (at once outside a transaction); free when nobody listens."""
    if entries and usage_recorded.has_listeners(CostEntry):
        transaction.on_commit(lambda: usage_recorded.send(sender=CostEntry, entries=entries))


def cost_entry_record_many(events: Sequence[Mapping[str, Any]]) -> list[BulkItemResult]:
    """Record a batch. Each event is accepted, a duplicate, or rejected with its field errors.

    Valid events are written in one transaction with one price query, one duplicate check,
    one bulk insert and one rollup upsert; rejected ones change nothing.
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

    book = PriceBook.load({(e.provider, e.model) for _, e in cleaned})
    unknown_providers = {e.provider for _, e in cleaned if not book.has_model(e.provider, e.model)}
    unknown_providers = {p for p in unknown_providers if not _provider_known(p)}
    pending: list[tuple[int, CostEntry]] = []
    for i, event in cleaned:
        if event.provider in unknown_providers:
            results[i] = BulkItemResult(
                "rejected", errors={"provider": [f"unknown provider {event.provider!r} (not in the price catalog)"]}
            )
        else:
            try:
                pending.append((i, _entry_from_event(event, book)))
            except ValidationError as exc:  # e.g. a cost beyond what a ledger entry holds
                results[i] = BulkItemResult("rejected", errors=exc.message_dict)

    with transaction.atomic():
        keys = [entry.idempotency_key for _, entry in pending]
        # PostgreSQL needs no look-up first: the insert's ON CONFLICT sorts out keys already recorded.
        lookup = keys and connection.vendor != "postgresql"
        existing = {e.idempotency_key: e for e in CostEntry.objects.filter(idempotency_key__in=keys)} if lookup else {}
        fresh: list[tuple[int, CostEntry]] = []
        seen: dict[str, int] = {}
        for i, entry in pending:
            key = entry.idempotency_key
            if key in existing:
                results[i] = BulkItemResult("duplicate", entry=existing[key])
            elif key in seen:
                fresh_index = seen[key]
                results[i] = BulkItemResult("duplicate", entry=fresh[fresh_index][1])
            else:
                seen[key] = len(fresh)
                fresh.append((i, entry))
        # Lock order, so concurrent writers never deadlock: ledger keys in sorted order first, then
        # the rollup rows (sorted by _rollups_add); never a ledger key while holding rollup rows.
        fresh.sort(key=lambda item: item[1].idempotency_key)
        if connection.vendor == "postgresql":
            # COPY through a stage table; the unique constraint picks the new keys (tracking.ingest).
            written = entries_copy_insert([entry for _, entry in fresh])
            _rollups_add(rollup_deltas(written), series=metric_series_deltas(written))
            went_in = {entry.idempotency_key for entry in written}
            lost = [entry.idempotency_key for _, entry in fresh if entry.idempotency_key not in went_in]
            winners = {e.idempotency_key: e for e in CostEntry.objects.filter(idempotency_key__in=lost)} if lost else {}
            for i, entry in fresh:
                if entry.idempotency_key in went_in:
                    results[i] = BulkItemResult("accepted", entry=entry)
                else:  # recorded before, or by a concurrent writer
                    results[i] = BulkItemResult("duplicate", entry=winners[entry.idempotency_key])
            _announce([r.entry for r in results if r is not None and r.status == "accepted" and r.entry is not None])
            return [r for r in results if r is not None]
        try:
            with transaction.atomic():
                CostEntry.objects.bulk_create([entry for _, entry in fresh], batch_size=500)
                written = [entry for _, entry in fresh]
                _rollups_add(rollup_deltas(written), series=metric_series_deltas(written))
            for i, entry in fresh:
                results[i] = BulkItemResult("accepted", entry=entry)
        except IntegrityError:
            # A concurrent writer recorded one of these keys after our check: insert one by one,
            # then add the ones that went in to the rollups together.
            inserted: list[CostEntry] = []
            for i, entry in fresh:
                try:
                    with transaction.atomic():
                        entry.pk = None
                        entry.save(force_insert=True)
                    inserted.append(entry)
                    results[i] = BulkItemResult("accepted", entry=entry)
                except IntegrityError:
                    duplicate = CostEntry.objects.get(idempotency_key=entry.idempotency_key)
                    results[i] = BulkItemResult("duplicate", entry=duplicate)
            _rollups_add(rollup_deltas(inserted), series=metric_series_deltas(inserted))
        _announce([r.entry for r in results if r is not None and r.status == "accepted" and r.entry is not None])
    return [r for r in results if r is not None]


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
            _rollups_add(rollup_deltas([correction]), series=metric_series_deltas([correction]))
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
    from .selectors import ledger_rollup_totals

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {CostEntry._meta.db_table} IN SHARE MODE")
        series: dict[SeriesKey, list[Any]] = {}
        expected = ledger_rollup_totals(series=series, progress=progress)
        SpendRollup.objects.all().delete()
        SpendRollupDay.objects.all().delete()
        MetricSeries.objects.all().delete()
        _rollups_add(expected, series=series)
    return len(expected)
