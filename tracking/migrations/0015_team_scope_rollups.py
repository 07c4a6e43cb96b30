"""A team's entries now also count towards their team's copy of every scope (team:NAME/model:X ...,
core.scopes): add those rollup rows for the entries already in the ledger.

It runs the live rebuild (tracking.services.rollups_rebuild, the function `manage.py rebuild_rollups`
runs), and only where some entry has a team: a new or team-less ledger has nothing to add. If a
later migration changes the ledger's or the rollups' columns, this backfill must move after it.
"""

from django.db import migrations


def add_team_scope_rollups(apps, schema_editor):
    CostEntry = apps.get_model("tracking", "CostEntry")
    if not CostEntry.objects.filter(team__isnull=False).exists():
        return
    from tracking.services import rollups_rebuild

    rollups_rebuild()


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0002_alter_team_name"),
        ("tracking", "0014_batch_service"),
    ]

    operations = [migrations.RunPython(add_team_scope_rollups, migrations.RunPython.noop, elidable=True)]
