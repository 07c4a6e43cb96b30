"""Team moved to core (core/0001): the same table, so only Django's state changes here."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0005_notification_claimed_by"),
        ("core", "0001_team"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="alertrule",
                    name="team",
                    field=models.ForeignKey(blank=True, help_text="The team this rule belongs to; empty = organisation-wide.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name="alert_rules", to="core.team", verbose_name="team"),
                ),
                migrations.AlterField(
                    model_name="alert",
                    name="team",
                    field=models.ForeignKey(blank=True, help_text="Set when raised: the rule's team, else the budget's; empty = organisation-wide.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name="alerts", to="core.team", verbose_name="team"),
                ),
            ],
        ),
    ]
