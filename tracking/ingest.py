"""PostgreSQL bulk ingest: priced entries written through COPY, exactly once.

Django's bulk_create spends most of a 500-event batch preparing ~30 values per row and binding
them client-side. Here the rows go to the server with COPY into a temporary stage table, then one
INSERT ... SELECT ... ON CONFLICT (idempotency_key) DO NOTHING RETURNING moves them into the
ledger: the unique constraint decides, in the same transaction as the insert, which keys are new.
Only those are added to the rollups (the same rollup_deltas/_rollups_add as every other write), so
a key seen before, in this batch or a concurrent one, is counted once.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection
from django.utils import timezone
from psycopg.types.json import Jsonb

from core.money import to_nanos

from .models import CostEntry

_STAGE = "costcontrol_ingest_stage"
_COLUMNS = tuple(f.column for f in CostEntry._meta.concrete_fields if not f.primary_key)
_ATTRS = tuple(f.attname for f in CostEntry._meta.concrete_fields if not f.primary_key)
_JSON = {"tags", "prices_used"}


def entry_row(entry: CostEntry) -> tuple:
    """The entry's column values as PostgreSQL takes them (CostEntry's concrete fields but the
    primary key, in order): what Field.get_db_prep_save gives for the values a CostEntry holds,
    without its per-field calls (the record path's largest Python cost after pricing). The money
    as integer nano-units, JSON wrapped. Set recorded_at first (auto_now_add is not applied)."""
    values = []
    for attname in _ATTRS:
        value = getattr(entry, attname)
        if attname == "amount":
            value = to_nanos(value)
        elif attname in _JSON:
            value = Jsonb(value)
        values.append(value)
    return tuple(values)


def entries_copy_insert(entries: Sequence[CostEntry]) -> list[CostEntry]:
    """Insert the entries whose idempotency key is new (inside the caller's transaction); returns
    those, with their primary keys set, in the order given. PostgreSQL only."""
    if not entries:
        return []
    now = timezone.now()
    for entry in entries:
        if entry.recorded_at is None:
            entry.recorded_at = now
    columns = ", ".join(_COLUMNS)
    with connection.cursor() as cursor:
        # A temporary table lives as long as the connection; ON COMMIT DELETE ROWS empties it.
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM {CostEntry._meta.db_table} WITH NO DATA"
        )
        cursor.execute(f"TRUNCATE {_STAGE}")
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        with raw.copy(f"COPY {_STAGE} ({columns}) FROM STDIN") as copy:
            for entry in entries:
                copy.write_row(entry_row(entry))
        # Key order: concurrent writers take the unique index's locks in the same order.
        cursor.execute(
            f"INSERT INTO {CostEntry._meta.db_table} ({columns}) SELECT {columns} FROM {_STAGE}"
            f" ORDER BY idempotency_key ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key"
        )
        inserted = dict((key, pk) for pk, key in cursor.fetchall())
    fresh = []
    for entry in entries:
        pk = inserted.get(entry.idempotency_key)
        if pk is not None:
            entry.pk = pk
            entry._state.adding = False
            entry._state.db = connection.alias
            fresh.append(entry)
    return fresh
