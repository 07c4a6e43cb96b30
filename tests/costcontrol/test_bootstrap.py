"""`manage.py bootstrap`: first-run set-up, safe to run again."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from tracking.models import Price
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db


def bootstrap() -> str:
    out = StringIO()
    call_command("bootstrap", stdout=out)
    return out.getvalue()


def test_it_loads_prices_installs_the_schedule_and_creates_an_admin_with_a_generated_password(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    output = bootstrap()

    assert Price.objects.filter(provider="openai", model="gpt-4o").exists()
    assert cost_entry_record(
        provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500
    ).entry.amount == Decimal("0.0075")
    assert PeriodicTask.objects.filter(task="tracking.ledger_verify").exists()
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser
    password = output.split("password '")[1].split("'")[0]
    assert admin.check_password(password)


def test_it_takes_the_admin_credentials_from_the_environment(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "finance")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "finance@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "correct horse battery staple")

    output = bootstrap()

    user = get_user_model().objects.get(username="finance")
    assert user.check_password("correct horse battery staple")
    assert "correct horse" not in output  # a chosen password is never echoed


def test_running_it_twice_changes_nothing(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "x-very-long-password")
    bootstrap()
    prices, tasks, users = Price.objects.count(), PeriodicTask.objects.count(), get_user_model().objects.count()

    second = bootstrap()

    assert (Price.objects.count(), PeriodicTask.objects.count(), get_user_model().objects.count()) == (
        prices,
        tasks,
        users,
    )
    assert "0 added, 0 changed" in second
    assert "Beat schedule: 0 created, 0 updated" in second
    assert "exists" in second


def test_schedule_edits_made_in_the_admin_survive_a_second_run(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "x-very-long-password")
    bootstrap()
    task = PeriodicTask.objects.get(task="tracking.ledger_verify")
    task.crontab = CrontabSchedule.objects.create(minute="0", hour="5", timezone="UTC")
    task.enabled = False
    task.save()

    bootstrap()

    task.refresh_from_db()
    assert (task.crontab.hour, task.enabled) == ("5", False)
