"""Batches and cost per lead: arithmetic, months in TIME_ZONE, zero leads, the command, the alerts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from alerts.evaluation import alerts_evaluate
from alerts.models import Alert, AlertRule, Metric, Window
from alerts.services import alert_rules_defaults_ensure
from costcontrol.celery import app as celery_app
from tracking.batches import (
    batch_cost_compute,
    batch_finish,
    batch_running_job,
    batch_start,
    cost_per_lead,
    cost_per_lead_change,
    month_to_date,
)
from tracking.gpu import gpu_current_job
from tracking.models import Batch
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db
_keys = itertools.count()


def spend(amount: str, at: datetime, job: str = "", **fields: object) -> None:
    cost_entry_record(
        provider="openai",
        model="gpt-4o",
        amount=amount,
        occurred_at=at,
        job=job,
        idempotency_key=f"batch-test-{next(_keys)}",
        **fields,
    )


def run_batch(name: str, start: datetime, cost: str, leads: int, *, minutes: int = 30) -> Batch:
    with time_machine.travel(start, tick=False):
        batch = batch_start(name=name)
    spend(cost, start + timedelta(minutes=1), job=batch.job)
    finish = start + timedelta(minutes=minutes)
    with time_machine.travel(finish, tick=False):
        batch = batch_finish(batch=batch, leads=leads)
        return batch_cost_compute(batch=batch)


def test_cost_per_lead_is_rounded_half_even_to_the_nano_in_one_place():
    assert cost_per_lead(Decimal("10"), 3) == Decimal("3.333333333")
    assert cost_per_lead(Decimal("0.000000005"), 2) == Decimal("0.000000002")  # 2.5 nano -> 2 (half even)
    assert cost_per_lead(Decimal("0.000000015"), 2) == Decimal("0.000000008")  # 7.5 nano -> 8
    assert cost_per_lead(Decimal("12.50"), 0) is None


def test_a_batch_costs_what_was_recorded_with_its_job_and_nothing_else(gpt4o_prices):
    start = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        batch = batch_start(name="nightly-leads")
    assert batch.job == "nightly-leads-20261120T020000"
    spend("1.25", start + timedelta(minutes=5), job=batch.job)
    spend("0.75", start + timedelta(minutes=70), job=batch.job)  # the next hour
    spend("9.00", start + timedelta(minutes=6))  # not the batch's
    with time_machine.travel(start + timedelta(hours=2), tick=False):
        batch = batch_cost_compute(batch=batch_finish(batch=batch, leads=8))
    assert (batch.cost, batch.leads, batch.cost_per_lead) == (Decimal("2"), 8, Decimal("0.25"))


def test_zero_leads_is_an_undefined_cost_per_lead_and_raises_an_alert(gpt4o_prices):
    alert_rules_defaults_ensure()
    batch = run_batch("nightly-leads", datetime(2026, 11, 20, 2, tzinfo=UTC), "4.00", 0)
    assert batch.cost == Decimal("4") and batch.cost_per_lead is None
    with time_machine.travel(batch.finished_at + timedelta(minutes=1), tick=False):
        alerts_evaluate()
    alert = Alert.objects.get(rule__name="Cost per lead, last batch")
    assert alert.value is None and alert.title == "Cost per lead, last batch: undefined"
    assert f"the last batch nightly-leads ({batch.job}) produced no leads" in alert.message
    assert "4.00 USD spent" in alert.message


def test_the_threshold_rule_fires_above_3_usd_per_lead_and_resolves_below(gpt4o_prices):
    alert_rules_defaults_ensure()
    costly = run_batch("nightly-leads", datetime(2026, 11, 20, 2, tzinfo=UTC), "35.00", 10)
    with time_machine.travel(costly.finished_at + timedelta(minutes=1), tick=False):
        alerts_evaluate()
    alert = Alert.objects.get(rule__name="Cost per lead, last batch")
    assert alert.state == "firing" and alert.value == Decimal("3.5")
    assert "3.50 USD, above 3.00 USD" in alert.message  # as the admin shows them (AlertRule.figure)
    cheap = run_batch("nightly-leads", datetime(2026, 11, 21, 2, tzinfo=UTC), "10.00", 10)
    with time_machine.travel(cheap.finished_at + timedelta(minutes=1), tick=False):
        alerts_evaluate()
    alert.refresh_from_db()
    assert alert.state == "resolved"


def test_month_to_date_is_this_months_spend_over_the_leads_of_batches_finished_this_month(gpt4o_prices, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    # A batch that runs over the month boundary in Berlin: 31 Oct 23:30 to 1 Nov 00:30 local.
    start = datetime(2026, 10, 31, 22, 30, tzinfo=UTC)  # 23:30 CET
    with time_machine.travel(start, tick=False):
        batch = batch_start(name="nightly-leads")
    spend("3.00", start + timedelta(minutes=10), job=batch.job)  # October (local)
    spend("5.00", start + timedelta(minutes=50), job=batch.job)  # 1 Nov 00:20 local: November
    spend("2.00", datetime(2026, 10, 15, 12, tzinfo=UTC))  # October, no batch
    spend("4.00", datetime(2026, 11, 2, 12, tzinfo=UTC))  # November, no batch
    with time_machine.travel(start + timedelta(hours=1), tick=False):
        batch = batch_cost_compute(batch=batch_finish(batch=batch, leads=6))
    # The batch costs everything recorded with its job, on both sides of the boundary.
    assert (batch.cost, batch.cost_per_lead) == (Decimal("8"), Decimal("1.333333333"))
    # Month to date when it finished: November so far (5.00), its 6 leads.
    assert (batch.month_cost, batch.month_leads) == (Decimal("5"), 6)
    mtd = month_to_date(at=datetime(2026, 11, 3, tzinfo=UTC))
    assert mtd.start == datetime(2026, 10, 31, 23, tzinfo=UTC)  # Berlin midnight
    assert (mtd.cost, mtd.leads, mtd.cost_per_lead) == (Decimal("9"), 6, Decimal("1.5"))
    # In October, no batch had finished: no leads, an undefined month-to-date cost per lead.
    october = month_to_date(at=datetime(2026, 10, 31, 22, 0, tzinfo=UTC))
    assert (october.cost, october.leads, october.cost_per_lead) == (Decimal("5"), 0, None)


def test_the_regression_rule_compares_the_last_batch_with_the_median_of_the_previous_week(gpt4o_prices):
    alert_rules_defaults_ensure()
    day = datetime(2026, 11, 10, 2, tzinfo=UTC)
    for i, cost in enumerate(["10.00", "12.00", "11.00", "30.00", "10.50"]):  # per lead 1.00 1.20 1.10 3.00 1.05
        run_batch("nightly-leads", day + timedelta(days=i), cost, 10)
    last = run_batch("nightly-leads", day + timedelta(days=5), "15.40", 10)  # 1.54 per lead
    change = cost_per_lead_change(batch=last)
    assert change == (Decimal("40.00"), Decimal("1.1"))  # median of 1.00 1.05 1.10 1.20 3.00 is 1.10
    with time_machine.travel(last.finished_at + timedelta(minutes=1), tick=False):
        alerts_evaluate()
    assert not Alert.objects.filter(rule__name="Cost per lead regression, last batch").exists()  # 40 % is not above
    # 1.70 against the median of the six before it (1.15): +47.83 %.
    worse = run_batch("nightly-leads", day + timedelta(days=6), "17.00", 10)
    assert cost_per_lead_change(batch=worse) == (Decimal("47.83"), Decimal("1.15"))
    with time_machine.travel(worse.finished_at + timedelta(minutes=1), tick=False):
        alerts_evaluate()
    alert = Alert.objects.get(rule__name="Cost per lead regression, last batch")
    assert alert.state == "firing" and "%, above 40 %" in alert.message


def test_batches_older_than_a_week_are_not_the_median(gpt4o_prices):
    first = run_batch("p", datetime(2026, 11, 1, 2, tzinfo=UTC), "1.00", 10)
    assert cost_per_lead_change(batch=first) is None  # no history
    late = run_batch("p", datetime(2026, 11, 9, 2, tzinfo=UTC), "5.00", 10)
    assert cost_per_lead_change(batch=late) is None  # the only other batch is 8 days older


def test_bad_input_names_the_field_and_changes_nothing(gpt4o_prices):
    batch = batch_start(name="nightly")
    for leads, message in ((-1, "must be zero or more"), ("many", "must be a whole number"), (True, "whole number")):
        with pytest.raises(ValidationError) as excinfo:
            batch_finish(batch=batch, leads=leads)
        assert message in " ".join(excinfo.value.message_dict["leads"])
    with pytest.raises(ValidationError) as excinfo:
        batch_start(name="nightly")
    assert "already running" in excinfo.value.message_dict["name"][0]
    with pytest.raises(ValidationError) as excinfo:
        batch_start(name="")
    assert "name" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        batch_start(name="other", job=batch.job)
    assert "job" in excinfo.value.message_dict
    assert Batch.objects.count() == 1 and Batch.objects.get().finished_at is None
    batch_finish(batch=batch, leads=3)
    with pytest.raises(ValidationError) as excinfo:
        batch_finish(batch=batch, leads=4)
    assert "already finished" in excinfo.value.message_dict["name"][0]
    assert Batch.objects.get().leads == 3


def test_the_command_starts_and_finishes_a_batch_and_prints_its_cost_per_lead(gpt4o_prices):
    out = StringIO()
    call_command("batch", "start", "nightly-leads", "--quiet", stdout=out)
    job = out.getvalue().strip()
    assert Batch.objects.get(job=job).name == "nightly-leads"
    spend("6.00", datetime.now(UTC), job=job)
    out = StringIO()
    call_command("batch", "finish", "nightly-leads", "--leads", "4", stdout=out)
    text = out.getvalue()
    assert f"job {job}, cost 6.0000 USD, 4 leads, cost per lead 1.5000 USD." in text
    assert "Month to date: 6.00 USD for 4 leads, cost per lead 1.5000 USD." in text
    with pytest.raises(CommandError, match="leads: must be zero or more"):
        call_command("batch", "start", "again", stdout=StringIO())
        call_command("batch", "finish", "again", "--leads", "-2", stdout=StringIO())
    with pytest.raises(CommandError, match="name: no batch 'ghost' is running"):
        call_command("batch", "finish", "ghost", "--leads", "1", stdout=StringIO())
    out = StringIO()
    call_command("batch", "list", stdout=out)
    assert "nightly-leads" in out.getvalue() and "running" in out.getvalue()


def test_finishing_enqueues_the_cost_after_commit(gpt4o_prices, django_capture_on_commit_callbacks):
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        batch = batch_start(name="nightly")
        spend("2.00", datetime.now(UTC), job=batch.job)
        with django_capture_on_commit_callbacks(execute=True):
            batch_finish(batch=batch, leads=4)
            assert Batch.objects.get().cost is None  # not before the commit
    finally:
        celery_app.conf.task_always_eager = eager
    batch.refresh_from_db()
    assert (batch.cost, batch.cost_per_lead) == (Decimal("2"), Decimal("0.5")) and batch.cost_computed_at


def test_gpu_time_goes_to_the_one_running_batch():
    assert batch_running_job() == ""
    batch = batch_start(name="train")
    assert batch_running_job() == gpu_current_job() == batch.job
    batch_start(name="other")
    assert batch_running_job() == ""  # two running: not attributed


def test_the_admin_lists_batches_with_cost_per_lead_and_a_trend_chart(admin_client, gpt4o_prices):
    day = datetime(2026, 11, 10, 2, tzinfo=UTC)
    for i, (cost, leads) in enumerate([("10.00", 10), ("12.00", 10), ("3.00", 0)]):
        run_batch("nightly-leads", day + timedelta(days=i), cost, leads)
    response = admin_client.get(reverse("admin:tracking_batch_changelist"))
    page = response.content.decode()
    assert "1.00 USD" in page and "1.20 USD" in page and "undefined (no leads)" in page
    # The trend, drawn by Chart.js: a batch without leads is a gap in the line, counted under the chart.
    trend = response.context["cpl_trend"]
    assert 'id="cpl-trend"' in page and 'id="cpl-trend-data"' in page
    assert [v is None for v in trend["series"][0]["data"]] == [False, False, True] and trend["undefined"] == 1
    rule = AlertRule.objects.create(
        name="x", metric=Metric.COST_PER_LEAD_CHANGE, window=Window.MONTH, threshold=Decimal(1), scope="global"
    )
    with pytest.raises(ValidationError) as excinfo:
        rule.full_clean()
    assert "window" in excinfo.value.message_dict


def test_the_example_pipeline_script_runs_a_batch_end_to_end(tmp_path):
    """bin/run_nightly.sh against a fresh SQLite database, as a user would run it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "costcontrol.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'pipeline.sqlite3'}",
        "CELERY_BROKER_URL": "memory://",
        "ENABLE_EMAIL_ALERTS": "0",
        "ENABLE_SLACK_ALERTS": "0",
        "PY": sys.executable,
    }

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=root, env={**env, **extra}, capture_output=True, text=True, timeout=120, check=False
        )

    assert run(sys.executable, "manage.py", "migrate", "-v0").returncode == 0
    assert run(sys.executable, "manage.py", "bootstrap").returncode == 0  # the price catalog
    done = run("bin/run_nightly.sh", PIPELINE="demo", LEADS="7")
    assert done.returncode == 0, done.stderr
    assert "run_nightly: batch demo started, job demo-" in done.stdout
    assert ", 7 leads, cost per lead " in done.stdout and "undefined" not in done.stdout
    listed = run(sys.executable, "manage.py", "batch", "list")
    assert "demo" in listed.stdout and "7 leads" in listed.stdout
