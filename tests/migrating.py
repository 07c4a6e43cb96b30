"""Migrating the test database in the tests of one migration, and back to the latest state after them.

A test that stops at a named migration must leave every app at its latest migration: the tests that
follow (on PostgreSQL, in the same database) expect the newest schema.
"""

from __future__ import annotations

from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(overrides: dict[str, str | None]) -> Apps:
    """Every app at its latest migration but those in `overrides` (None: none of it applied)."""
    executor = MigrationExecutor(connection)
    leaves = dict(executor.loader.graph.leaf_nodes())
    targets = [(app, overrides.get(app, name)) for app, name in leaves.items()]
    executor.migrate(targets)
    executor = MigrationExecutor(connection)
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def migrate_latest() -> Apps:
    return migrate({})
