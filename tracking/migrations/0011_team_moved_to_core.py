"""Team moved to core (core/0001) with its table and rows: the ledger's foreign key now names
core.Team in Django's state, and tracking's Team leaves the state. Nothing changes in the database."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0010_spendrollupday_scope_like"),
        ("core", "0001_team"),
        ("budgets", "0004_team_in_core"),
        ("alerts", "0006_team_in_core"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="costentry",
                    name="team",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="cost_entries", to="core.team"),
                ),
                migrations.DeleteModel(name="Team"),
            ],
        ),
    ]
