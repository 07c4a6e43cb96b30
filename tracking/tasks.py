"""Thin Celery tasks for tracking: load, call one service or selector, log."""

from __future__ import annotations

import logging

from celery import shared_task

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
