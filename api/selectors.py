"""Reads for the API: spend of a scope in a window, grouped, from the rollups (never the ledger)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError

from core.scopes import scope_errors, scope_inner, scope_team, team_scope
from tracking.models import SpendRollup
from tracking.selectors import scope_totals, spend_total

GROUP_BY = ("provider", "model", "service", "subject", "day", "hour")
MAX_HOURS = 31 * 24
MAX_DAYS = 3 * 366


@dataclass(frozen=True)
class Group:
    key: str
    amount: Decimal
    events: int


@dataclass(frozen=True)
class SpendAnswer:
    total: Decimal
    groups: list[Group]


def spend_grouped(*, scope: str, start: datetime, end: datetime, group_by: str | None, currency: str) -> SpendAnswer:
    """Spend of `scope` over the hourly buckets that start in [start, end), optionally grouped.

    Grouping by provider/model/service/subject reads those scopes' own rollups, so it is offered
    for scope=global and for a team's whole spend, team:NAME (its team:NAME/model:X rollups; rollups
    are per single dimension otherwise); day groups are TIME_ZONE days.
    """
    if problems := scope_errors(scope):
        raise ValidationError({"scope": problems})
    for name, value in (("from", start), ("to", end)):
        if value.tzinfo is None:
            raise ValidationError({name: "must include a time zone offset (e.g. 2026-11-23T00:00:00+00:00)"})
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValidationError({name: "is out of range"}) from None
    if end <= start:
        raise ValidationError({"to": "must be after from"})
    if group_by is not None and group_by not in GROUP_BY:
        raise ValidationError({"group_by": f"must be one of {', '.join(GROUP_BY)}"})
    span = end - start
    if group_by == "hour" and span > timedelta(hours=MAX_HOURS):
        raise ValidationError({"to": f"group_by=hour covers at most {MAX_HOURS // 24} days"})
    if span > timedelta(days=MAX_DAYS):
        raise ValidationError({"to": f"a window covers at most {MAX_DAYS} days"})
    total = spend_total(scope=scope, start=start, end=end, currency=currency)
    if group_by is None:
        return SpendAnswer(total=total, groups=[])
    if group_by in ("hour", "day"):
        return SpendAnswer(total=total, groups=_series(scope, start, end, group_by, currency))
    if scope_inner(scope) != "global":
        raise ValidationError({"group_by": f"group_by={group_by} is answered for scope=global or team:NAME only"})
    return SpendAnswer(total=total, groups=_by_dimension(scope, group_by, start, end, currency))


def _series(scope: str, start: datetime, end: datetime, step: str, currency: str) -> list[Group]:
    rows = SpendRollup.objects.filter(scope=scope, currency=currency, bucket__gte=start, bucket__lt=end).values_list(
        "bucket", "amount", "events"
    )
    tz = ZoneInfo(settings.TIME_ZONE)
    groups: dict[str, list] = {}
    for bucket, amount, events in rows.order_by("bucket"):
        key = bucket.isoformat() if step == "hour" else bucket.astimezone(tz).date().isoformat()
        current = groups.setdefault(key, [Decimal(0), 0])
        current[0] += amount
        current[1] += events
    return [Group(key=k, amount=a, events=e) for k, (a, e) in groups.items()]


def _by_dimension(scope: str, kind: str, start: datetime, end: datetime, currency: str) -> list[Group]:
    team = scope_team(scope)
    prefix = f"{kind}:" if team is None else team_scope(team, f"{kind}:")
    found = scope_totals(start=start, end=end, prefixes=[prefix], counters=("amount", "events"), currency=currency)
    totals = {scope[len(prefix) :]: (values["amount"], values["events"]) for scope, values in found.items()}
    groups = [Group(key=k, amount=a, events=e) for k, (a, e) in totals.items()]
    return sorted(groups, key=lambda g: (-g.amount, g.key))
