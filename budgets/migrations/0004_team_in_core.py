"""Team moved to core (core/0001): the same table, so only Django's state changes here."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0003_definitions_generation"),
        ("core", "0001_team"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="budget",
                    name="team",
                    field=models.ForeignKey(blank=True, help_text="The team this budget belongs to; empty = organisation-wide.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name="budgets", to="core.team", verbose_name="team"),
                ),
            ],
        ),
    ]
