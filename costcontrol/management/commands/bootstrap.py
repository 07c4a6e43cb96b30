"""python manage.py bootstrap: first-run set-up after `migrate`. Idempotent: a second run changes nothing.

1. the default price catalog (tracking/data/default_catalog.json);
2. the beat schedule (costcontrol/schedule.py);
3. the defaults later issues define (global monthly budget, seed alert rules, default email channel);
4. an admin user, if none exists: DJANGO_SUPERUSER_USERNAME / _EMAIL / _PASSWORD, or a generated
   password printed once.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand

from alerts.services import alert_rules_defaults_ensure, channel_default_email_ensure
from budgets.services import budget_defaults_ensure
from costcontrol.services import admin_user_ensure, periodic_tasks_install
from tracking.catalog import price_catalog_load_default


class Command(BaseCommand):
    help = "First-run set-up: default prices, beat schedule, defaults, admin user. Safe to run again."

    def handle(self, *args: Any, **options: Any) -> None:
        report = price_catalog_load_default()
        self.stdout.write(
            f"Price catalog: {report.added} added, {report.changed} changed, {report.unchanged} unchanged."
        )
        created, updated = periodic_tasks_install()
        self.stdout.write(f"Beat schedule: {created} created, {updated} updated.")
        budget = budget_defaults_ensure().budget
        self.stdout.write(
            f"Default budget: {budget} created." if budget else "Default budget: budgets exist, none created."
        )

        channel = channel_default_email_ensure()
        self.stdout.write(
            f"Default channel: {channel.name} -> {channel.target}."
            if channel
            else "Default channel: none (set ALERT_EMAIL_TO to email alerts and the daily report)."
        )
        created_rules = alert_rules_defaults_ensure()
        self.stdout.write(f"Default alert rules: {created_rules} created.")

        result = admin_user_ensure(
            username=os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin"),
            email=os.environ.get("DJANGO_SUPERUSER_EMAIL", "admin@localhost"),
            password=os.environ.get("DJANGO_SUPERUSER_PASSWORD"),
        )
        if not result.created:
            self.stdout.write(f"Admin user: {result.username!r} exists.")
        elif result.generated_password:
            self.stdout.write(
                self.style.WARNING(
                    f"Admin user created: username {result.username!r}, password {result.generated_password!r}\n"
                    "  (shown once; set DJANGO_SUPERUSER_PASSWORD to choose it, or `manage.py changepassword`)"
                )
            )
        else:
            self.stdout.write(f"Admin user created: {result.username!r} (password from DJANGO_SUPERUSER_PASSWORD).")
