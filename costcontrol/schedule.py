"""The beat schedule, defined in code and installed by `manage.py setup_periodic_tasks`.

Each entry is created once by name; after that the admin owns its timing and on/off switch
(django-celery-beat's Periodic tasks screen), and re-running the command keeps those edits.
Later issues add their entries here (budget periods, alert evaluation, the daily report, GPU sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class ScheduledTask:
    name: str
    task: str
    description: str
    crontab: dict[str, str] | None = None  # minute, hour, day_of_week, day_of_month, month_of_year
    every_seconds: int | None = None


SCHEDULE: tuple[ScheduledTask, ...] = (
    ScheduledTask(
        name="Verify ledger against rollups (nightly)",
        task="tracking.ledger_verify",
        description="Recomputes the hourly rollups from the ledger and logs an error on any difference.",
        crontab={"minute": "30", "hour": "3"},
    ),
    ScheduledTask(
        name="Advance budget periods (hourly)",
        task="budgets.periods_advance",
        description="Opens each budget's current period at the boundary, closes finished ones (rollover), "
        "records peak levels. Writers open periods too, so a missed run never blocks a reset.",
        crontab={"minute": "1"},
    ),
    ScheduledTask(
        name="Release expired budget reservations",
        task="budgets.reservations_expire",
        description="Marks reservations that were never settled within BUDGET_RESERVATION_TTL_SECONDS as released.",
        every_seconds=60,
    ),
    ScheduledTask(
        name="Evaluate alerts (every minute)",
        task="alerts.evaluate",
        description="Budget levels and forecasts, then every due alert rule; writes notifications to the outbox.",
        every_seconds=60,
    ),
    ScheduledTask(
        name="Deliver due notifications (every minute)",
        task="alerts.notifications_flush",
        description="Retries with backoff, digests whose hour has come, anything a lost task left behind.",
        every_seconds=60,
    ),
    ScheduledTask(
        name="Daily cost report (07:00)",
        task="alerts.daily_report_send",
        description="Sends yesterday's cost report (TIME_ZONE days) to every enabled channel that receives reports. "
        "Idempotent per day and channel: a repeated tick sends nothing twice.",
        crontab={"minute": "0", "hour": "7"},
    ),
    ScheduledTask(
        name="Sample GPUs (NVML)",
        task="tracking.gpu_sample",
        description="Reads every GPU through NVML and stores a sample per device; in GPU burst mode bills the "
        "time since each device's previous sample as busy and idle GPU-hours. The interval starts at "
        "GPU_USAGE_CHECK_INTERVAL_SECONDS; edited here, it also sets how long a gap is billed (at most two "
        "intervals). Without a GPU or driver it logs one line and records nothing.",
        every_seconds=settings.GPU_USAGE_CHECK_INTERVAL_SECONDS,
    ),
    ScheduledTask(
        name="FOCUS export (daily)",
        task="tracking.focus_export_daily",
        description="Writes yesterday's (UTC) cost and usage as FOCUS 1.2 CSV, focus-YYYY-MM-DD.csv, to "
        "FOCUS_EXPORT_DIR (nothing when it is not set). The file of a day is replaced whole when re-run.",
        crontab={"minute": "20", "hour": "2"},
    ),
    ScheduledTask(
        name="Compute finished batches (hourly)",
        task="tracking.batches_compute_pending",
        description="Stores cost and cost per lead of batches finished whose own task was lost (broker down).",
        crontab={"minute": "7"},
    ),
    ScheduledTask(
        name="Pull provider bills (daily, 06:00)",
        task="tracking.bills_pull",
        description="Imports what the OpenAI and Anthropic cost APIs say they billed for each enabled billing source: "
        "the last closed UTC days (each source's days re-read) and any earlier day whose import failed. Beside "
        "the ledger, never in it; a day read again with the same lines changes nothing.",
        crontab={"minute": "0", "hour": "6"},
    ),
)
