"""Thin Celery tasks for tracking: load, call one service or selector, log."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from .batches import batch_cost_compute, batches_compute_pending
from .billing import bills_pull_enabled
from .focus import focus_export_daily
from .gpu import gpu_usage_sample
from .models import Batch
from .selectors import ledger_differences

logger = logging.getLogger(__name__)


@shared_task(name="tracking.ledger_verify")
def ledger_verify() -> int:
    """Nightly audit: the rollups must hold exactly what the ledger says. Returns the number of differences."""
    differences, _, rollup_rows = ledger_differences()
    if differences:
        first = differences[0]
        logger.error(
            "ledger and rollups differ in %d place(s), e.g. %s @ %s %s: ledger %s != rollup %s; "
            "run `manage.py rebuild_rollups`",
            len(differences),
            first.scope,
            first.bucket,
            first.field,
            first.ledger,
            first.rollup,
        )
    else:
        logger.info("ledger and rollups agree (%d rollup rows)", rollup_rows)
    return len(differences)


@shared_task(name="tracking.gpu_sample")
def gpu_sample() -> int:
    """Beat: sample every GPU through NVML and, in burst mode, bill the GPU time. Returns the devices sampled.

    Without NVML or a GPU it logs one line and returns 0. A re-delivered task (acks_late) bills
    only the time since the sample it already stored, so nothing is counted twice.
    """
    run = gpu_usage_sample()
    if run.unavailable is None:
        logger.info("%s", run.summary_lines()[0])
    return len(run.results)


@shared_task(name="tracking.batch_close", acks_late=True)
def batch_close(batch_id: int) -> str:
    """After a batch finished (enqueued on commit): store its cost and cost per lead."""
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None:
        return "gone"
    batch = batch_cost_compute(batch=batch)
    return f"{batch.name} ({batch.job}): {batch.cost} USD, {batch.leads} leads"


@shared_task(name="tracking.batches_compute_pending")
def batches_compute() -> int:
    """Hourly: batches finished whose cost task was lost (broker down) are computed now."""
    done = batches_compute_pending()
    if done:
        logger.warning("computed the cost of %d finished batch(es) whose task had not run", done)
    return done


@shared_task(name="tracking.focus_export_daily")
def focus_export_daily_task() -> str:
    """Beat: yesterday's (UTC) FOCUS file in FOCUS_EXPORT_DIR; nothing when it is not set. Re-run, it writes the
    same file again (replaced whole), so a repeated tick or a late re-run after corrections is safe."""
    if not settings.FOCUS_EXPORT_DIR:
        return "FOCUS_EXPORT_DIR is not set: nothing written"
    path, rows = focus_export_daily(settings.FOCUS_EXPORT_DIR)
    logger.info("FOCUS export: %d rows written to %s", rows, path)
    return str(path)


@shared_task(name="tracking.bills_pull")
def bills_pull() -> str:
    """Beat, daily: what each enabled provider cost API says it billed for the last closed UTC days (and the
    days that failed before). A failing source is recorded on it and the others are still pulled."""
    done = bills_pull_enabled()
    failed = sum(1 for _, results in done if isinstance(results, str) or any(not r.ok for r in results))
    summary = f"{len(done)} billing source(s) pulled, {failed} with failures"
    (logger.warning if failed else logger.info)("%s", summary)
    return summary
