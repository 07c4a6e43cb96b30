"""Every write to tracking_price gives tracking_pricecatalogstate a new random token.

The record path caches price books per process under the token it read them with and checks
the token before (SQLite) or inside (PostgreSQL) the write, so no event is ever priced from a
stale cache, however the price table was changed. The state row is upserted, so it survives a
TRUNCATE of the table (test flushes) and needs no data migration.
"""

from django.db import migrations

SQLITE_CREATE = [
    f"""
CREATE TRIGGER tracking_price_token_{event.lower()}
AFTER {event} ON tracking_price
BEGIN
    INSERT OR REPLACE INTO tracking_pricecatalogstate (id, token) VALUES (1, lower(hex(randomblob(16))));
END;
"""
    for event in ("INSERT", "UPDATE", "DELETE")
]
SQLITE_DROP = [f"DROP TRIGGER IF EXISTS tracking_price_token_{e};" for e in ("insert", "update", "delete")]

POSTGRES_CREATE = [
    """
CREATE OR REPLACE FUNCTION tracking_price_token_bump() RETURNS trigger AS $$
BEGIN
    INSERT INTO tracking_pricecatalogstate (id, token)
    VALUES (1, md5(random()::text || clock_timestamp()::text))
    ON CONFLICT (id) DO UPDATE SET token = excluded.token;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
""",
    """
CREATE TRIGGER tracking_price_token
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tracking_price
FOR EACH STATEMENT EXECUTE FUNCTION tracking_price_token_bump();
""",
]
POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS tracking_price_token ON tracking_price;",
    "DROP FUNCTION IF EXISTS tracking_price_token_bump();",
]


def create_triggers(apps, schema_editor):
    statements = {"sqlite": SQLITE_CREATE, "postgresql": POSTGRES_CREATE}.get(schema_editor.connection.vendor, [])
    for sql in statements:
        schema_editor.execute(sql)


def drop_triggers(apps, schema_editor):
    statements = {"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP}.get(schema_editor.connection.vendor, [])
    for sql in statements:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("tracking", "0003_price_catalog_state")]

    operations = [migrations.RunPython(create_triggers, drop_triggers, elidable=False)]
