"""A channel may belong to a team (issue 18); the existing ones stay organisation-wide. Apprise targets name
the services the SSRF guard allows."""

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
        migrations.AlterField(
            model_name='channel',
            name='target',
            field=models.TextField(help_text='email: addresses separated by commas; webhook: the https:// URL to POST to; Slack, Teams, Discord: the incoming-webhook URL; PagerDuty: pagerduty://INTEGRATION_KEY@API_KEY; other: an apprise URL of json, xml, form, Mattermost (mmost), ntfy, Power Automate (workflow), rsyslog or mailto.', verbose_name='target'),
        ),
        migrations.AddConstraint(
            model_name='channel',
            constraint=models.CheckConstraint(condition=models.Q(('team__isnull', True), ('receives_reports', False), _connector='OR'), name='channel_reports_organisation_wide', violation_error_message='The daily report covers every team: only an organisation-wide channel (no team) receives it.'),
        ),
    ]
