"""A generation token for the budgets' definitions, kept by triggers.

budget_check keeps the budgets and current periods it has read, in process, and re-reads them
only when this token changes: every committed change to a budget, and every change to or
removal of a period, gives it a new value (budgets.selectors.budget_positions). Opening a period
(an INSERT) leaves it alone: a kept position whose period still holds the moment checked cannot
have a newer period, and one whose period has ended is read again anyway.

The table is not a model on purpose: `manage.py flush` (and the test runner's) must not empty
it, so the token keeps changing through a flush of the budgets.
"""

import secrets

from django.db import migrations

POSTGRESQL = [
    # Started at random: a process that meets two databases (a test run, a restored copy) never
    # sees the same token stand for two different sets of budgets.
    "CREATE SEQUENCE budgets_generation_seq START WITH {start}",
    "CREATE TABLE budgets_generation (id smallint PRIMARY KEY CHECK (id = 1), token bigint NOT NULL)",
    "INSERT INTO budgets_generation (id, token) VALUES (1, nextval('budgets_generation_seq'))",
    # A sequence never hands out a value twice, rolled back or not: a token is never reused.
    """CREATE FUNCTION budgets_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE budgets_generation SET token = nextval('budgets_generation_seq') WHERE id = 1;
        RETURN NULL;
    END $$""",
    # Statement-level, and only when the statement changed rows: the beat's UPDATE of peak levels
    # that matches nothing leaves the token (and its row lock) alone.
    """CREATE FUNCTION budgets_generation_bump_if_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM changed) THEN
            UPDATE budgets_generation SET token = nextval('budgets_generation_seq') WHERE id = 1;
        END IF;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER budgets_budget_generation_insert AFTER INSERT ON budgets_budget"
    " REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION budgets_generation_bump_if_changed()",
    "CREATE TRIGGER budgets_budget_generation_update AFTER UPDATE ON budgets_budget"
    " REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION budgets_generation_bump_if_changed()",
    "CREATE TRIGGER budgets_budget_generation_delete AFTER DELETE ON budgets_budget"
    " REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION budgets_generation_bump_if_changed()",
    "CREATE TRIGGER budgets_budget_generation_truncate AFTER TRUNCATE ON budgets_budget"
    " FOR EACH STATEMENT EXECUTE FUNCTION budgets_generation_bump()",
    "CREATE TRIGGER budgets_budgetperiod_generation_update AFTER UPDATE ON budgets_budgetperiod"
    " REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION budgets_generation_bump_if_changed()",
    "CREATE TRIGGER budgets_budgetperiod_generation_delete AFTER DELETE ON budgets_budgetperiod"
    " REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION budgets_generation_bump_if_changed()",
    "CREATE TRIGGER budgets_budgetperiod_generation_truncate AFTER TRUNCATE ON budgets_budgetperiod"
    " FOR EACH STATEMENT EXECUTE FUNCTION budgets_generation_bump()",
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER budgets_budget_generation_insert ON budgets_budget",
    "DROP TRIGGER budgets_budget_generation_update ON budgets_budget",
    "DROP TRIGGER budgets_budget_generation_delete ON budgets_budget",
    "DROP TRIGGER budgets_budget_generation_truncate ON budgets_budget",
    "DROP TRIGGER budgets_budgetperiod_generation_update ON budgets_budgetperiod",
    "DROP TRIGGER budgets_budgetperiod_generation_delete ON budgets_budgetperiod",
    "DROP TRIGGER budgets_budgetperiod_generation_truncate ON budgets_budgetperiod",
    "DROP FUNCTION budgets_generation_bump_if_changed()",
    "DROP FUNCTION budgets_generation_bump()",
    "DROP TABLE budgets_generation",
    "DROP SEQUENCE budgets_generation_seq",
]

# SQLite: row-level triggers only; a random 64-bit token (a repeat is a 2**-64 chance).
_SQLITE_BUMP = "BEGIN UPDATE budgets_generation SET token = random() WHERE id = 1; END"
SQLITE = [
    "CREATE TABLE budgets_generation (id integer PRIMARY KEY CHECK (id = 1), token integer NOT NULL)",
    "INSERT INTO budgets_generation (id, token) VALUES (1, random())",
    *(
        f"CREATE TRIGGER budgets_{table}_generation_{event.lower()} AFTER {event} ON budgets_{table}"
        f" FOR EACH ROW {_SQLITE_BUMP}"
        for table, events in (("budget", ("INSERT", "UPDATE", "DELETE")), ("budgetperiod", ("UPDATE", "DELETE")))
        for event in events
    ),
]
SQLITE_REVERSE = [
    *(
        f"DROP TRIGGER budgets_{table}_generation_{event.lower()}"
        for table, events in (("budget", ("INSERT", "UPDATE", "DELETE")), ("budgetperiod", ("UPDATE", "DELETE")))
        for event in events
    ),
    "DROP TABLE budgets_generation",
]

STATEMENTS = {"postgresql": (POSTGRESQL, POSTGRESQL_REVERSE), "sqlite": (SQLITE, SQLITE_REVERSE)}


def _run(schema_editor, forward: bool) -> None:
    vendor = schema_editor.connection.vendor
    if vendor not in STATEMENTS:
        raise RuntimeError(f"budgets_generation has no triggers for {vendor}: costcontrol runs on PostgreSQL or SQLite")
    start = secrets.randbelow(2**62) + 1
    for sql in STATEMENTS[vendor][0 if forward else 1]:
        schema_editor.execute(sql.replace("{start}", str(start)), params=None)


def forwards(apps, schema_editor):
    _run(schema_editor, forward=True)


def backwards(apps, schema_editor):
    _run(schema_editor, forward=False)


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0002_budget_channels"),
    ]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
