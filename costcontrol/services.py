"""Project-wide set-up verbs: the beat schedule and the first admin user."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

from .schedule import SCHEDULE, ScheduledTask


def _schedule_fields(item: ScheduledTask) -> dict[str, object]:
    if item.crontab is not None:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=item.crontab.get("minute", "*"),
            hour=item.crontab.get("hour", "*"),
            day_of_week=item.crontab.get("day_of_week", "*"),
            day_of_month=item.crontab.get("day_of_month", "*"),
            month_of_year=item.crontab.get("month_of_year", "*"),
            timezone=settings.TIME_ZONE,
        )
        return {"crontab": crontab, "interval": None}
    interval, _ = IntervalSchedule.objects.get_or_create(every=item.every_seconds, period=IntervalSchedule.SECONDS)
    return {"interval": interval, "crontab": None}


@transaction.atomic
def periodic_tasks_install() -> tuple[int, int]:
    """Create missing beat entries by name; keep the admin's edits to existing ones.

    Only the task path of an existing entry is brought up to date (code may rename a task).
    Returns (created, updated).
    """
    created = updated = 0
    for item in SCHEDULE:
        task = PeriodicTask.objects.filter(name=item.name).first()
        if task is None:
            PeriodicTask.objects.create(
                name=item.name,
                task=item.task,
                description=item.description,
                args=json.dumps([]),
                **_schedule_fields(item),
            )
            created += 1
        elif task.task != item.task:
            PeriodicTask.objects.filter(pk=task.pk).update(task=item.task)
            updated += 1
    if updated:
        # A bulk .update() bypasses the signal that tells beat to reload its schedule.
        PeriodicTasks.update_changed()
    return created, updated


@dataclass(frozen=True)
class AdminUserResult:
    username: str
    created: bool
    generated_password: str | None = None


def admin_user_ensure(*, username: str, email: str, password: str | None) -> AdminUserResult:
    """Create a superuser if none exists. Without a password one is generated (and returned once)."""
    user_model = get_user_model()
    existing = user_model.objects.filter(is_superuser=True).order_by("pk").first()
    if existing is not None:
        return AdminUserResult(existing.get_username(), created=False)
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=username, email=email, password=password)
    return AdminUserResult(username, created=True, generated_password=generated)
