"""Levels come from values and forecast alerts say "forecast to exceed" (help texts only), and the
budgets' generation token goes: budget_check no longer keeps budgets per process, so the table and the
triggers that kept it (migration 0003) are dropped. Backwards, 0003's statements put them back."""

import importlib

import budgets.models
from django.db import migrations, models

_generation = importlib.import_module("budgets.migrations.0003_definitions_generation")


class Migration(migrations.Migration):

    dependencies = [
        ('budgets', '0004_team_in_core'),
    ]

    operations = [
        migrations.AlterField(
            model_name='budget',
            name='forecast_alerts',
            field=models.BooleanField(default=False, help_text='Warn when the forecast says the limit will be exceeded before the period ends ("forecast to exceed on <date>").', verbose_name='forecast alerts'),
        ),
        migrations.AlterField(
            model_name='budget',
            name='thresholds',
            field=models.JSONField(default=budgets.models.default_thresholds, help_text="Percents of the limit, strictly increasing, each 1-1000, at which the budget speaks up. Each one's level follows from its value: below 80 info, 80 to 95 warning, 95 to 100 critical, 100 and above exceeded.", verbose_name='thresholds (%)'),
        ),
        migrations.RunPython(_generation.backwards, _generation.forwards, elidable=False),
    ]
