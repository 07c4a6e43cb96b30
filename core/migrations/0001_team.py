"""Team moves from tracking to core with its rows: the table (tracking_team) and its members table stay
as they are; only Django's state moves. The content type follows, so permissions given on teams and the
admin's history of them are kept."""

from django.conf import settings
from django.db import migrations, models


def content_type_to_core(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="core", model="team").exists():
        ContentType.objects.filter(app_label="tracking", model="team").update(app_label="core")


def content_type_to_tracking(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="tracking", model="team").exists():
        ContentType.objects.filter(app_label="core", model="team").update(app_label="tracking")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("tracking", "0010_spendrollupday_scope_like"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Team",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(help_text="Shown in reports; also the team:NAME scope.", max_length=100, unique=True, verbose_name="name")),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("members", models.ManyToManyField(blank=True, related_name="costcontrol_teams", to=settings.AUTH_USER_MODEL, verbose_name="members")),
                    ],
                    options={"ordering": ["name"], "db_table": "tracking_team"},
                ),
            ],
        ),
        migrations.RunPython(content_type_to_core, content_type_to_tracking),
    ]
