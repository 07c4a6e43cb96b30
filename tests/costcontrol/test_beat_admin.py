"""Celery beat's schedules read in the admin's one format: 24-hour times, no raw timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, PeriodicTask

from tests.admin_clients import superuser_client

pytestmark = pytest.mark.django_db


def test_schedules_read_in_24_hour_time_and_the_admins_date_format(settings):
    settings.TIME_ZONE = "UTC"
    crontab = CrontabSchedule.objects.create(minute="30", hour="15", timezone="UTC")
    clocked = ClockedSchedule.objects.create(clocked_time=datetime(2026, 12, 5, 15, 32, 59, 984085, tzinfo=UTC))
    PeriodicTask.objects.create(name="once", task="x", clocked=clocked, one_off=True)

    assert crontab.human_readable == "At 15:30 (UTC)"
    assert str(clocked) == "2026-12-05 15:32"
    client = superuser_client()
    assert "At 15:30 (UTC)" in client.get(reverse("admin:django_celery_beat_crontabschedule_changelist")).text
    add = client.get(reverse("admin:django_celery_beat_periodictask_add")).text
    assert "2026-12-05 15:32" in add and "15:32:59" not in add
    listed = client.get(reverse("admin:django_celery_beat_periodictask_changelist")).context["cl"].list_display
    assert "one_off" in listed and "interval" not in listed
