"""python manage.py bootstrap: first-run set-up after `migrate`. Idempotent: it only creates, so a second
run changes nothing and what the admin changed afterwards is kept.

1. the default price catalog (tracking/data/default_catalog.json);
2. the beat schedule (costcontrol/schedule.py);
3. the defaults, from the environment (README, "Configuration"):
   - a global monthly budget of MONTHLY_BUDGET, if no budget exists;
   - DEFAULT_DAILY_BUDGET set: the budget template "Daily per end user" (subject:*, daily), each end user
     getting a budget of that amount of their own on first use, if no subject:* template exists;
   - the default email channel to EMAIL_ALERT_RECIPIENTS (older name: ALERT_EMAIL_TO), unless
     ENABLE_EMAIL_ALERTS is off;
   - SLACK_WEBHOOK_URL set: the default Slack channel, unless ENABLE_SLACK_ALERTS is off;
   - the seed alert rules;
4. an admin user, if none exists: DJANGO_SUPERUSER_USERNAME / _EMAIL / _PASSWORD, or a generated
   password printed once.

All of it is one transaction, reported once it is committed: a bad value (DEFAULT_DAILY_BUDGET=abc, a
SLACK_WEBHOOK_URL that is not Slack's) is an error naming the variable, and nothing is created.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from alerts.services import alert_rules_defaults_ensure, channel_default_email_ensure, channel_default_slack_ensure
from budgets.services import budget_defaults_ensure
from costcontrol.services import admin_user_ensure, periodic_tasks_install
from tracking.catalog import price_catalog_load_default


def _problems(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items())
    return " ".join(error.messages)


class Command(BaseCommand):
    help = "First-run set-up: default prices, beat schedule, defaults, admin user. Safe to run again."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with transaction.atomic():
                lines = self.set_up()
        except ValidationError as exc:
            raise CommandError(f"{_problems(exc)} (bootstrap changed nothing)") from None
        for line in lines:
            self.stdout.write(line)

    def set_up(self) -> list[str]:
        lines = []
        report = price_catalog_load_default()
        lines.append(f"Price catalog: {report.added} added, {report.changed} changed, {report.unchanged} unchanged.")
        created, updated = periodic_tasks_install()
        lines.append(f"Beat schedule: {created} created, {updated} updated.")

        budgets = budget_defaults_ensure()
        lines.append(
            f"Default budget: {budgets.budget} created."
            if budgets.budget
            else "Default budget: budgets exist, none created."
        )
        if budgets.daily_template:
            lines.append(f"Daily budget per end user: {budgets.daily_template} created.")
        elif settings.DEFAULT_DAILY_BUDGET in (None, ""):
            lines.append("Daily budget per end user: none (set DEFAULT_DAILY_BUDGET to give each end user one).")
        else:
            lines.append("Daily budget per end user: a subject:* template exists, none created.")

        email = channel_default_email_ensure()
        if email:
            lines.append(f"Default channel: {email.name} -> {email.target}.")
        elif not settings.ENABLE_EMAIL_ALERTS:
            lines.append("Default email channel: none created (ENABLE_EMAIL_ALERTS is off).")
        else:
            lines.append("Default channel: none (set EMAIL_ALERT_RECIPIENTS to email alerts and the daily report).")
        slack = channel_default_slack_ensure()
        if slack:
            lines.append(f"Default channel: {slack.name} (Slack).")  # never the URL: its path is the secret
        elif settings.SLACK_WEBHOOK_URL:
            lines.append("Default Slack channel: none created (ENABLE_SLACK_ALERTS is off).")
        else:
            lines.append("Default Slack channel: none (set SLACK_WEBHOOK_URL to post alerts to Slack).")
        created_rules = alert_rules_defaults_ensure()
        lines.append(f"Default alert rules: {created_rules} created.")

        result = admin_user_ensure(
            username=os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin"),
            email=os.environ.get("DJANGO_SUPERUSER_EMAIL", "admin@localhost"),
            password=os.environ.get("DJANGO_SUPERUSER_PASSWORD"),
        )
        if not result.created:
            lines.append(f"Admin user: {result.username!r} exists.")
        elif result.generated_password:
            lines.append(
                self.style.WARNING(
                    f"Admin user created: username {result.username!r}, password {result.generated_password!r}\n"
                    "  (shown once; set DJANGO_SUPERUSER_PASSWORD to choose it, or `manage.py changepassword`)"
                )
            )
        else:
            lines.append(f"Admin user created: {result.username!r} (password from DJANGO_SUPERUSER_PASSWORD).")
        return lines
