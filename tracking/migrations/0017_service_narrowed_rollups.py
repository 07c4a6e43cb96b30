"""An entry of a service that has a subject or a job now also counts towards the service's copy of
them, `service:NAME/subject:X` and `service:NAME/job:X` (core.scopes.service_narrowed; what a budget
template narrowed to a service reads): add those rollup rows for the entries already in the ledger.

As 0015 does: the live rebuild (tracking.services.rollups_rebuild, `manage.py rebuild_rollups`), and
only where some entry has both a service and a subject or a job. If a later migration changes the
ledger's or the rollups' columns, this backfill must move after it.
"""

from django.db import migrations
from django.db.models import Q


def add_service_narrowed_rollups(apps, schema_editor):
    CostEntry = apps.get_model("tracking", "CostEntry")
    narrowed = CostEntry.objects.exclude(service="").exclude(service__contains="/")
    if not narrowed.filter(~Q(subject="") | ~Q(job="")).exists():
        return
    from tracking.services import rollups_rebuild

    rollups_rebuild()


class Migration(migrations.Migration):
    dependencies = [("tracking", "0016_help_texts_for_people")]

    operations = [migrations.RunPython(add_service_narrowed_rollups, migrations.RunPython.noop, elidable=True)]
