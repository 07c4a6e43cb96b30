"""Database helpers for the few hot statements that Django's ORM does not express well."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

_NEVER_AUTOMATICALLY = 2**31 - 1


def fetch_all_prepared(sql: str, params: Sequence[Any], *, using: str = DEFAULT_DB_ALIAS) -> list[tuple[Any, ...]]:
    """Run one hot, fixed-text SELECT and return its rows; on PostgreSQL as a server-side prepared
    statement.

    Django binds parameters on the client by default, so PostgreSQL parses and plans every call
    (0.2-0.4 ms for a join with subqueries, more than executing it). This statement is prepared
    once per connection and then only executed. The query goes through Django's cursor wrapper,
    so query logging, assertNumQueries and execute_wrapper see it. Elsewhere it is a plain
    execute. Do not use behind a pgbouncer in transaction mode older than 1.21.
    """
    conn = connections[using]
    if conn.vendor != "postgresql":
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    conn.close_if_health_check_failed()
    conn.ensure_connection()
    if conn.connection.prepare_threshold is None:
        # Django's default (None) turns preparing off altogether, prepare=True included. A threshold
        # no statement reaches prepares only the statements run with prepare=True: Django's own
        # client-side binding cursors never prepare.
        conn.connection.prepare_threshold = _NEVER_AUTOMATICALLY
    # One psycopg cursor per database connection, kept: creating one costs more than running the
    # statement. Django's connections are per thread, so this one is too.
    raw = getattr(conn, "_costcontrol_prepared_cursor", None)
    if raw is None or raw.connection is not conn.connection or raw.closed:
        raw = _prepared_cursor_class()(conn.connection)
        conn._costcontrol_prepared_cursor = raw
    conn.validate_thread_sharing()
    cursor = conn.make_cursor(raw)  # Django's wrapper: error translation and execute_wrapper
    if not conn.queries_logged:
        cursor.execute(sql, params)
        return cursor.fetchall()
    # Django's debug cursor would log None: psycopg keeps no query text for a prepared execution.
    started = time.monotonic()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        elapsed = time.monotonic() - started
        conn.queries_log.append({"sql": conn.ops.compose_sql(sql, params), "time": f"{elapsed:.3f}"})


@cache
def _prepared_cursor_class() -> type:
    """A psycopg cursor that binds on the server and prepares every statement it runs."""
    from django.db.backends.postgresql.base import ServerBindingCursor
    from psycopg import _queries

    class FixedTextQuery(_queries.PostgresQuery):
        """psycopg parses a query's text for its placeholders on every execution when the text is
        over 4 kB or has over 50 parameters (it expects those to be one-off ORM statements): the
        record statement is both, and parsing it cost more than running it. These statements are
        a few fixed texts, so their parse is always kept (psycopg's own LRU cache, pinned 3.3)."""

        def convert(self, query: Any, vars: Any) -> None:
            if vars is None or not isinstance(query, str):
                return super().convert(query, vars)
            encoding = self._tx.encoding
            parsed = _queries._query2pg(query.encode(encoding), encoding)
            self.query, self._want_formats, self._order, self._parts = parsed
            self.dump(vars)
            return None

    class PreparedCursor(ServerBindingCursor):
        _query_cls = FixedTextQuery

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, prepare=True)

    return PreparedCursor
