"""The ledger is append-only: the database itself refuses UPDATE of a cost entry.

A correction is a new entry (tracking.services.cost_entry_correct). DELETE stays possible
for data-retention jobs and test teardown; the admin offers neither.
"""

from django.db import migrations

SQLITE_CREATE = """
CREATE TRIGGER tracking_costentry_append_only
BEFORE UPDATE ON tracking_costentry
BEGIN
    SELECT RAISE(ABORT, 'tracking_costentry is append-only: record a correcting entry instead');
END;
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS tracking_costentry_append_only;"

POSTGRES_CREATE = """
CREATE OR REPLACE FUNCTION tracking_costentry_refuse_update() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'tracking_costentry is append-only: record a correcting entry instead'
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER tracking_costentry_append_only
BEFORE UPDATE ON tracking_costentry
FOR EACH ROW EXECUTE FUNCTION tracking_costentry_refuse_update();
"""
POSTGRES_DROP = """
DROP TRIGGER IF EXISTS tracking_costentry_append_only ON tracking_costentry;
DROP FUNCTION IF EXISTS tracking_costentry_refuse_update();
"""


def create_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        schema_editor.execute(SQLITE_CREATE)
    elif vendor == "postgresql":
        schema_editor.execute(POSTGRES_CREATE)


def drop_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        schema_editor.execute(SQLITE_DROP)
    elif vendor == "postgresql":
        schema_editor.execute(POSTGRES_DROP)


class Migration(migrations.Migration):
    dependencies = [("tracking", "0001_initial")]

    operations = [migrations.RunPython(create_trigger, drop_trigger, elidable=False)]
