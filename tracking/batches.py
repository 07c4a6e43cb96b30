"""Batches: runs of a pipeline that produce leads, their cost and cost per lead.

A batch has a job id; every ledger entry recorded with that job (API calls, GPU time) belongs to
it, so its cost is the `job:<id>` rollups, never a ledger scan. Cost per lead is rounded in one
place, cost_per_lead().
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from core.money import MONEY_QUANTUM

from .models import Batch, SpendRollupDay
from .selectors import spend_total

logger = logging.getLogger(__name__)

BATCH_CURRENCY = "USD"
REGRESSION_HISTORY = timedelta(days=7)
_NAME_MAX, _JOB_MAX, _NOTE_MAX = 200, 200, 500


def cost_per_lead(cost: Decimal, leads: int) -> Decimal | None:
    """cost / leads, rounded half-even to the money quantum (1E-9); None (undefined) for no leads."""
    if leads <= 0:
        return None
    return (cost / leads).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


def lead_unit() -> str:
    return settings.LEAD_UNIT_NAME


# --- selectors ---------------------------------------------------------------------------------


def batch_cost(*, job: str) -> Decimal:
    """Everything recorded with this job id, from the daily rollups of scope job:<id>."""
    total = SpendRollupDay.objects.filter(scope=f"job:{job}", currency=BATCH_CURRENCY).aggregate(t=Sum("amount"))["t"]
    return (total if total is not None else Decimal(0)).quantize(MONEY_QUANTUM)


@dataclass(frozen=True)
class MonthToDate:
    start: datetime
    cost: Decimal  # all spend this calendar month (TIME_ZONE), from the rollups
    leads: int  # leads of the batches finished this month
    cost_per_lead: Decimal | None


def month_to_date(*, at: datetime) -> MonthToDate:
    """Month-to-date cost per lead as the seeds define it: this month's total cost / leads produced
    this month (batches finished since the 1st, local midnight in TIME_ZONE)."""
    from core.periods import period_bounds  # the calendar the budgets use

    start, end = period_bounds("monthly", at)
    assert end is not None
    hour_end = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    cost = spend_total(scope="global", start=start, end=min(hour_end, end), currency=BATCH_CURRENCY)
    leads = (
        Batch.objects.filter(finished_at__gte=start, finished_at__lt=end, finished_at__lte=at).aggregate(
            n=Sum("leads")
        )["n"]
        or 0
    )
    return MonthToDate(
        start=start, cost=cost.quantize(MONEY_QUANTUM), leads=leads, cost_per_lead=cost_per_lead(cost, leads)
    )


def batch_last_finished(*, at: datetime | None = None) -> Batch | None:
    batches = Batch.objects.filter(finished_at__isnull=False, cost_computed_at__isnull=False)
    if at is not None:
        batches = batches.filter(finished_at__lte=at)
    return batches.order_by("-finished_at", "-pk").first()


def cost_per_lead_change(*, batch: Batch) -> tuple[Decimal, Decimal] | None:
    """(percent above the median, the median) of the batch's cost per lead against the batches that
    finished in the 7 days before it; None when either side is undefined or there is no history."""
    if batch.cost_per_lead is None or batch.finished_at is None:
        return None
    previous = Batch.objects.filter(
        finished_at__gte=batch.finished_at - REGRESSION_HISTORY,
        finished_at__lt=batch.finished_at,
        cost_per_lead__isnull=False,
    ).exclude(pk=batch.pk)
    values = [b.cost_per_lead for b in previous]
    if not values:
        return None
    median = statistics.median(values)
    if median <= 0:
        return None
    percent = ((batch.cost_per_lead - median) * 100 / median).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return percent, median


def batch_running_job() -> str:
    """The job of the one batch running now ("" when none or several are running: GPU time is then
    not attributed to a batch)."""
    jobs = list(Batch.objects.filter(finished_at__isnull=True).values_list("job", flat=True)[:2])
    return jobs[0] if len(jobs) == 1 else ""


# --- services ----------------------------------------------------------------------------------


def _text(value: Any, field: str, limit: int, *, required: bool) -> str:
    text = "" if value is None else str(value).strip()
    if required and not text:
        raise ValidationError({field: "is required"})
    if len(text) > limit:
        raise ValidationError({field: f"is longer than {limit} characters"})
    if any(c.isspace() for c in text) and field != "note":
        raise ValidationError({field: "must not contain spaces"})
    if field == "name" and "/" in text:  # the name is a path segment: /api/v1/batches/<name>/finish
        raise ValidationError({field: "must not contain '/'"})
    return text


def batch_start(
    *, name: str, job: str | None = None, note: str = "", at: datetime | None = None, service: str = ""
) -> Batch:
    """Open a batch of pipeline `name`. Entries recorded with its job id belong to it. One batch of a
    name runs at a time; the job id defaults to <name>-<UTC start time>. `service` (the API key's)
    owns it."""
    at = at or timezone.now()
    name = _text(name, "name", _NAME_MAX, required=True)
    stamp = f"-{at.astimezone(UTC):%Y%m%dT%H%M%S}"
    # The name is cut so that the default job fits its column (a 200-character name overflowed it).
    job = _text(job, "job", _JOB_MAX, required=False) or f"{name[: _JOB_MAX - len(stamp)]}{stamp}"
    note = _text(note, "note", _NOTE_MAX, required=False)
    running = Batch.objects.filter(name=name, finished_at__isnull=True).first()
    if running is not None:
        raise ValidationError({"name": f"batch {name!r} is already running (job {running.job}); finish it first"})
    if Batch.objects.filter(job=job).exists():
        raise ValidationError({"job": f"job id {job!r} was already used by another batch"})
    try:
        with transaction.atomic():
            return Batch.objects.create(name=name, job=job, note=note, started_at=at, service=service)
    except IntegrityError:
        raise ValidationError({"name": f"batch {name!r} is already running or job {job!r} is taken"}) from None


def batch_latest(*, name: str) -> Batch | None:
    """The last batch of pipeline `name`, running or not: whose pipeline it is."""
    return Batch.objects.filter(name=name).order_by("-started_at", "-pk").first()


def batch_running(*, name: str) -> Batch:
    batch = Batch.objects.filter(name=name, finished_at__isnull=True).first()
    if batch is None:
        raise ValidationError({"name": f"no batch {name!r} is running"})
    return batch


def _leads(value: Any) -> int:
    if isinstance(value, bool):
        raise ValidationError({"leads": "must be a whole number"})
    try:
        leads = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationError({"leads": f"must be a whole number, not {value!r}"}) from None
    if leads < 0:
        raise ValidationError({"leads": "must be zero or more"})
    return leads


def batch_finish(*, batch: Batch, leads: Any, at: datetime | None = None) -> Batch:
    """Close a batch with the number of leads it produced. Its cost and cost per lead are computed
    by a task enqueued after commit (batch_cost_compute), so the caller never waits on it."""
    leads = _leads(leads)
    at = at or timezone.now()
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        if locked.finished_at is not None:
            raise ValidationError({"name": f"batch {locked.name!r} (job {locked.job}) is already finished"})
        if at < locked.started_at:
            raise ValidationError({"finished_at": "is before the batch started"})
        locked.finished_at, locked.leads = at, leads
        locked.save(update_fields=["finished_at", "leads"])
        transaction.on_commit(lambda: _compute_later(locked.pk))
    return locked


def _compute_later(batch_id: int) -> None:
    from .tasks import batch_close

    try:
        batch_close.apply_async(args=[batch_id], retry=False)
    except Exception:  # the broker is down: the hourly sweep computes it
        logger.warning("could not enqueue the cost of batch #%s; batches_compute_pending will", batch_id, exc_info=True)


def batch_cost_compute(*, batch: Batch, now: datetime | None = None) -> Batch:
    """Compute and store a finished batch's cost, cost per lead and the month-to-date figures.

    Idempotent: the figures are read from the rollups and stored (never added to), so running it
    again (a task delivered again after its worker died, late entries) gives the current figures.
    One transaction, under the batch's row lock: a run killed midway stores nothing, and two runs
    at once store one after the other."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        if locked.finished_at is None:
            raise ValidationError({"batch": f"batch {locked.name!r} is still running"})
        cost = batch_cost(job=locked.job)
        mtd = month_to_date(at=locked.finished_at)  # as it stood when the batch finished
        Batch.objects.filter(pk=locked.pk).update(
            cost=cost,
            cost_per_lead=cost_per_lead(cost, locked.leads or 0),
            month_cost=mtd.cost,
            month_leads=mtd.leads,
            month_cost_per_lead=mtd.cost_per_lead,
            cost_computed_at=now,
        )
    batch.refresh_from_db()
    return batch


def batches_compute_pending(*, now: datetime | None = None) -> int:
    """Compute the batches finished but not computed (their task was lost with the broker)."""
    done = 0
    for batch in Batch.objects.filter(finished_at__isnull=False, cost_computed_at__isnull=True):
        batch_cost_compute(batch=batch, now=now)
        done += 1
    return done
