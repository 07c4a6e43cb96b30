"""Worker crash: a real Celery worker on a real Redis, SIGKILLed in the middle of a task, then started
again. Every task completes exactly once afterwards: no cost, notification or report lost or doubled.

How the kill lands inside the task, every time, with no hook in the application: the test holds
the real server the task is talking to. Closing a batch waits on the batch's row lock, which the
test holds in PostgreSQL; sending the report waits on the SMTP server, which holds the transaction
at RCPT TO (before any message data, so nothing is accepted); delivering an alert waits on the
webhook receiver, which holds the POST unanswered. The test kills the worker's main process with
SIGKILL (an OOM kill, a lost node: no warm shutdown, nothing acknowledged or given back; Celery's
pool processes die with it), then releases the server and starts the worker again.

Redis has no acknowledgements: the message the dead worker held comes back after the visibility
timeout (CELERY_VISIBILITY_TIMEOUT, an hour by default, a few seconds here) - that, and acks_late,
is what these tests prove brings the task back.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from alerts.models import DeliveryAttempt, Notification, NotificationKind, NotificationStatus
from alerts.services import alert_fire
from alerts.transports import DELIVERY_HEADER, email_message_id
from tests.alerts.servers import Hold, smtp_server, webhook_receiver
from tests.factories import ChannelFactory
from tracking.batches import batch_finish, batch_start, cost_per_lead
from tracking.models import Batch, CostEntry, SpendRollup, SpendRollupDay
from tracking.services import cost_entry_record

from .celery_worker import CeleryWorker, database_url, send_task
from .servers import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# The worker's Redis visibility timeout: how long after its delivery an unacknowledged message is
# given out again. It must exceed the hard time limit (settings refuse otherwise).
VISIBILITY_TIMEOUT = 10
TASK_TIME_LIMIT = 8
WAIT = 90.0  # generous bound for anything the worker does (2 shared cores)


@pytest.fixture
def start_worker(redis: RedisServer, transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., CeleryWorker]]:
    """start_worker(**env) -> a running worker on the test database and the `redis` broker, with the
    production settings; stopped (its process group killed) at the end. Prints its log (shown on failure)."""
    workers: list[CeleryWorker] = []

    def start(**extra: str) -> CeleryWorker:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "costcontrol.settings.production",
            "DJANGO_SECRET_KEY": "worker-crash-test-" + "x" * 40,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "SITE_URL": "http://127.0.0.1:8000",
            "DATABASE_URL": database_url(connection.settings_dict),
            "CONN_MAX_AGE": "0",
            "CELERY_BROKER_URL": redis.url,
            "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "CELERY_TASK_TIME_LIMIT": str(TASK_TIME_LIMIT),
            "CELERY_TASK_SOFT_TIME_LIMIT": str(TASK_TIME_LIMIT - 1),
            "CHANNEL_ALLOWED_NETWORKS": "127.0.0.0/8",  # the test's receivers listen on loopback
            "ENABLE_EMAIL_ALERTS": "0",
            "ENABLE_SLACK_ALERTS": "0",
            "LOG_LEVEL": "INFO",
            **extra,
        }
        worker = CeleryWorker(env=env, log_path=tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker.start()

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()
            print(f"----- {worker.log_path.name} -----\n{worker.log_tail(20000)}")


def wait_for(condition: Callable[[], object], what: str, worker: CeleryWorker | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    tail = f"\nworker log:\n{worker.log_tail()}" if worker else ""
    raise AssertionError(f"not within {WAIT:.0f} s: {what}{tail}")


def task_log(worker: CeleryWorker, task_id: str) -> dict[str, int]:
    """How often the worker's log says the task was received and succeeded (over every restart)."""
    text = worker.log_path.read_text(errors="replace")
    return {
        "received": len(re.findall(rf"Task [\w.]+\[{task_id}\] received", text)),
        "succeeded": len(re.findall(rf"Task [\w.]+\[{task_id}\] succeeded", text)),
    }


def ledger() -> tuple[int, Decimal | None, Decimal | None, Decimal | None]:
    return (
        CostEntry.objects.count(),
        CostEntry.objects.aggregate(t=Sum("amount"))["t"],
        SpendRollup.objects.filter(scope="global").aggregate(t=Sum("amount"))["t"],
        SpendRollupDay.objects.filter(scope="global").aggregate(t=Sum("amount"))["t"],
    )


def kill(worker: CeleryWorker) -> None:
    assert worker.kill() == [], "a pool process outlived its killed worker (it would finish the task)"


def test_a_worker_killed_while_closing_a_batch_stores_its_cost_once_after_the_restart(
    start_worker, redis, gpt4o_prices
):
    batch = batch_start(name="leadgen")
    for n, amount in enumerate(["1.25", "2.50", "0.000000007"]):
        cost_entry_record(
            provider="openai", model="gpt-4o", amount=amount, job=batch.job, idempotency_key=f"crash-batch-{n}"
        )
    batch = batch_finish(batch=batch, leads=3)
    before = ledger()
    worker = start_worker()

    with transaction.atomic():
        # The test holds the batch's row: the worker's batch_close waits on it, inside the task.
        Batch.objects.select_for_update().get(pk=batch.pk)
        task_id = send_task(redis.url, "tracking.batch_close", batch.pk)  # what batch_finish sends after commit

        def waiting_on_the_batch_lock() -> bool:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_stat_clear_snapshot()")  # a transaction sees one snapshot otherwise
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE %s",
                    ['%FROM "tracking_batch"%FOR UPDATE%'],
                )
                return cursor.fetchone()[0] == 1

        wait_for(waiting_on_the_batch_lock, "batch_close waiting on the batch's row lock", worker)
        kill(worker)
    assert Batch.objects.get(pk=batch.pk).cost_computed_at is None  # the killed run stored nothing

    worker.start()
    wait_for(lambda: Batch.objects.get(pk=batch.pk).cost_computed_at is not None, "the batch's cost", worker)
    wait_for(lambda: task_log(worker, task_id)["succeeded"], "batch_close succeeded", worker)

    batch.refresh_from_db()
    cost = Decimal("3.750000007")
    assert (batch.cost, batch.leads, batch.cost_per_lead) == (cost, 3, cost_per_lead(cost, 3))
    assert batch.cost_per_lead == Decimal("1.250000002")
    assert (batch.month_cost, batch.month_leads) == (cost, 3)
    assert ledger() == before  # closing a batch writes no ledger entry, and nothing was counted twice
    # Delivered twice (before the kill, after the restart), completed once.
    assert task_log(worker, task_id) == {"received": 2, "succeeded": 1}


def test_a_worker_killed_while_sending_the_daily_report_sends_it_once_after_the_restart(
    start_worker, redis, gpt4o_prices
):
    hold = Hold()
    with smtp_server(hold=hold) as (controller, sink):
        ChannelFactory(name="finance", kind="email", target="finance@example.com", receives_reports=True)
        yesterday = timezone.now() - timedelta(days=1)
        cost_entry_record(
            provider="openai", model="gpt-4o", amount="12.34", occurred_at=yesterday, idempotency_key="crash-report"
        )
        worker = start_worker(EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(controller.port))
        tick = send_task(redis.url, "alerts.daily_report_send")  # beat, 07:00

        assert hold.wait_arrived(WAIT), f"the report never reached the SMTP server:\n{worker.log_tail()}"
        # The worker is inside the send: its SMTP transaction waits at RCPT TO, no message accepted.
        [report] = Notification.objects.filter(kind=NotificationKind.REPORT)
        assert (report.status, report.attempts, sink.messages) == (NotificationStatus.SENDING, 1, [])
        kill(worker)
        hold.release()

        worker.start()
        wait_for(
            lambda: Notification.objects.get(pk=report.pk).status == NotificationStatus.SENT, "report sent", worker
        )
        # A second beat tick for the same day (beat restarted too) writes and sends nothing.
        again = send_task(redis.url, "alerts.daily_report_send")
        wait_for(lambda: task_log(worker, again)["succeeded"], "the repeated tick", worker)

        assert len(sink.messages) == 1
        [message] = sink.messages
        assert message.rcpt_tos == ["finance@example.com"]
        assert "costcontrol daily report for" in message.content.decode()
        # Every attempt has the same Message-ID: a copy sent twice (the window left) is recognisable.
        assert f"Message-ID: {email_message_id(report.dedup_key)}" in message.content.decode()
        assert hold.held == 1  # the one held transaction never got to DATA
    assert task_log(worker, tick) == {"received": 1, "succeeded": 1}
    assert Notification.objects.filter(kind=NotificationKind.REPORT).count() == 1
    report.refresh_from_db()
    assert (report.status, report.attempts) == (NotificationStatus.SENT, 2)
    attempts = list(DeliveryAttempt.objects.filter(notification=report).order_by("pk"))
    assert [a.ok for a in attempts] == [False, True]
    assert attempts[0].error.startswith("lost: the worker sending it stopped")


def test_a_worker_killed_while_delivering_an_alert_delivers_it_once_after_the_restart(start_worker, redis):
    hold = Hold()
    with webhook_receiver(hold=hold) as receiver:
        ChannelFactory(name="ops hook", kind="webhook", target=receiver.url, secret="s3cret", is_default=True)
        alert_fire(
            key="rule:crash:global",
            source="rule",
            level="critical",
            scope="global",
            title="Spend this hour",
            message="Spend of global this hour is 600.00 USD, above 500.00 USD.",
            value=Decimal(600),
            threshold=Decimal(500),
            currency="USD",
            cooldown=timedelta(hours=1),
        )
        [note] = Notification.objects.all()
        worker = start_worker()
        task_id = send_task(redis.url, "alerts.deliver_notification", note.pk)  # what the outbox sends after commit

        assert hold.wait_arrived(WAIT), f"the alert never reached the receiver:\n{worker.log_tail()}"
        kill(worker)  # the receiver has the POST and has not answered it
        hold.release()
        note.refresh_from_db()
        assert (note.status, note.attempts) == (NotificationStatus.SENDING, 1)

        worker.start()
        wait_for(lambda: Notification.objects.get(pk=note.pk).status == NotificationStatus.SENT, "alert sent", worker)
        wait_for(lambda: task_log(worker, task_id)["succeeded"], "deliver_notification succeeded", worker)

        [delivered] = receiver.delivered  # exactly one POST answered 2xx
        statuses = [r.headers["_status"] for r in receiver.requests]
        assert statuses == ["dropped", "200"]
        # The repeat carries the same delivery id: a receiver that got both can drop the second.
        assert {r.headers[DELIVERY_HEADER] for r in receiver.requests} == {note.dedup_key}
        assert json.loads(delivered.body)["alert"]["key"] == "rule:crash:global"
    note.refresh_from_db()
    assert (note.status, note.attempts, note.last_error) == (NotificationStatus.SENT, 2, "")
    attempts = list(DeliveryAttempt.objects.filter(notification=note).order_by("pk"))
    assert [a.ok for a in attempts] == [False, True]
    assert "the same task, delivered again" in attempts[0].error
    assert task_log(worker, task_id) == {"received": 2, "succeeded": 1}
