"""The price catalog token goes: the record path reads its prices in every batch (one query), so
no per-process price cache needs a token to stay valid. Drops migration 0004's triggers, then the
state table. Backwards, both come back as 0003 and 0004 made them."""

import importlib

from django.db import migrations

_TRIGGERS = importlib.import_module("tracking.migrations.0004_price_catalog_token_triggers")


class Migration(migrations.Migration):
    dependencies = [("tracking", "0011_team_moved_to_core")]

    operations = [
        migrations.RunPython(_TRIGGERS.drop_triggers, _TRIGGERS.create_triggers, elidable=False),
        migrations.DeleteModel(name="PriceCatalogState"),
    ]
