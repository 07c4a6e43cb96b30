"""A channel may belong to a team (issue 18); the existing ones stay organisation-wide."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('alerts', '0006_team_in_core'),
        ('core', '0002_alter_team_name'),
    ]

    operations = [
        migrations.AddField(
            model_name='channel',
            name='team',
            field=models.ForeignKey(blank=True, help_text="The team this channel belongs to: only its team's budgets and rules send here. Empty = organisation-wide (set up by superusers).", null=True, on_delete=django.db.models.deletion.PROTECT, related_name='channels', to='core.team', verbose_name='team'),
        ),
        migrations.AlterField(
            model_name='channel',
            name='is_default',
            field=models.BooleanField(default=False, help_text="Used by budgets and rules that choose no channel (a team's channel: by its team's only).", verbose_name='default channel'),
        ),
        migrations.AddConstraint(
            model_name='channel',
            constraint=models.CheckConstraint(condition=models.Q(('team__isnull', True), ('receives_reports', False), _connector='OR'), name='channel_reports_organisation_wide', violation_error_message='The daily report covers every team: only an organisation-wide channel (no team) receives it.'),
        ),
    ]
