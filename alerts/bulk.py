"""The writes of one evaluation pass, in one statement each instead of one per budget or rule.

- alerts_refresh: the latest figures of alerts that stay firing inside their cooldown (or a budget
  level already announced), written only where that still holds; the caller hands the others
  (resolved, due, or gone since the pass read them) to alert_fire, as _fire does one by one.
- alert_rules_measured: every evaluated rule's last_evaluated_at / last_value / last_error.

On PostgreSQL each is one UPDATE ... FROM unnest(arrays) (Django's bulk_update builds a CASE per
row and field: slower in Python than the UPDATEs it replaces). Elsewhere (SQLite, in-process, where
a statement costs little) they are the same conditional UPDATEs, one per row, in one transaction.
Values go through each field's get_db_prep_save, so the database stores what the ORM would.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Q

from core.db import fetch_all_prepared

from .models import Alert, AlertRule, AlertState

# What an evaluation refreshes on an alert that stays as it is (alert_fire writes the same).
FIGURES = ("title", "message", "value", "threshold", "level", "team_id")


def alert_stays_quiet(now: datetime) -> Q:
    """A firing alert that alert_fire would not notify at `now`: not due (inside its cooldown, or
    a budget level announced once)."""
    return Q(state=AlertState.FIRING) & (Q(next_notify_at__isnull=True) | Q(next_notify_at__gt=now))


def _prep(model: Any, name: str, values: list[Any]) -> list[Any]:
    field = model._meta.get_field(name)
    return [field.get_db_prep_save(value, connection) for value in values]


# The rows are locked in id order first: two evaluators refreshing the same alerts at once wait for
# each other instead of deadlocking. The UPDATE's own condition is checked again on the locked rows.
_REFRESH_SQL = f"""
WITH v(id, title, message, value, threshold, level, team_id) AS (
    SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::numeric[], %s::numeric[], %s::text[], %s::bigint[])
), locked AS (
    SELECT a.id FROM {Alert._meta.db_table} a
    WHERE a.id = ANY(%s::bigint[]) AND a.state = %s AND (a.next_notify_at IS NULL OR a.next_notify_at > %s)
    ORDER BY a.id FOR UPDATE
)
UPDATE {Alert._meta.db_table} a
SET title = v.title, message = v.message, value = v.value, threshold = v.threshold, level = v.level,
    team_id = v.team_id
FROM v, locked
WHERE a.id = v.id AND a.id = locked.id AND a.state = %s AND (a.next_notify_at IS NULL OR a.next_notify_at > %s)
RETURNING a.id
"""


def alerts_refresh(refreshes: Sequence[tuple[int, dict[str, Any]]], *, now: datetime) -> set[int]:
    """Write `figures` on each alert `pk` that is still firing and not due at `now`; return the pks
    written (the same conditional UPDATE as _fire's, for all of them)."""
    if not refreshes:
        return set()
    pks = [pk for pk, _ in refreshes]
    if connection.vendor != "postgresql":
        written = set()
        with transaction.atomic():
            for pk, figures in refreshes:
                if Alert.objects.filter(alert_stays_quiet(now), pk=pk).update(**figures):
                    written.add(pk)
        return written
    columns = [_prep(Alert, name, [figures[name] for _, figures in refreshes]) for name in FIGURES]
    now_db = _prep(Alert, "next_notify_at", [now])[0]
    rows = fetch_all_prepared(
        _REFRESH_SQL, [pks, *columns, pks, AlertState.FIRING.value, now_db, AlertState.FIRING.value, now_db]
    )
    return {pk for (pk,) in rows}


_MEASURED_SQL = f"""
WITH v(id, value) AS (SELECT * FROM unnest(%s::bigint[], %s::numeric[])),
locked AS (SELECT r.id FROM {AlertRule._meta.db_table} r WHERE r.id = ANY(%s::bigint[]) ORDER BY r.id FOR UPDATE)
UPDATE {AlertRule._meta.db_table} r SET last_evaluated_at = %s, last_value = v.value, last_error = ''
FROM v, locked
WHERE r.id = v.id AND r.id = locked.id
RETURNING r.id
"""


def alert_rules_measured(measured: Sequence[tuple[int, Decimal | None]], *, now: datetime) -> None:
    """last_evaluated_at = now, last_value, last_error = "" for each (rule pk, value)."""
    if not measured:
        return
    if connection.vendor != "postgresql":
        with transaction.atomic():
            for pk, value in measured:
                AlertRule.objects.filter(pk=pk).update(last_evaluated_at=now, last_value=value, last_error="")
        return
    pks = [pk for pk, _ in measured]
    values = _prep(AlertRule, "last_value", [value for _, value in measured])
    fetch_all_prepared(_MEASURED_SQL, [pks, values, pks, _prep(AlertRule, "last_evaluated_at", [now])[0]])
