from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from costcontrol.services import periodic_tasks_install


class Command(BaseCommand):
    help = "Install the beat schedule (costcontrol/schedule.py). Existing entries keep the admin's edits."

    def handle(self, *args: Any, **options: Any) -> None:
        created, updated = periodic_tasks_install()
        self.stdout.write(f"Beat schedule: {created} created, {updated} updated.")
