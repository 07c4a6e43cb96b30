"""What a user does in the admin (acknowledge, mute, test a channel, retry a dead letter) and the
budget evaluation a write sets off."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

import alerts.apps
from alerts.delivery import notification_deliver, notifications_flush
from alerts.models import Alert, AlertState, Notification, NotificationKind, NotificationStatus
from alerts.services import alert_fire
from costcontrol.celery import app as celery_app
from tests.alerts.servers import webhook_receiver
from tests.factories import BudgetFactory, ChannelFactory
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db
_keys = itertools.count()


def fire(n: int = 0) -> Alert:
    return alert_fire(
        key=f"rule:1:admin-{n}",
        source="rule",
        level="warning",
        scope="global",
        title=f"Spend today {n}",
        message=f"Rule 'Spend today': spend of global today is {600 + n}.00 USD, above 500.00 USD.",
        value=Decimal(600 + n),
        threshold=Decimal(500),
        currency="USD",
        cooldown=timedelta(hours=1),
    ).alert


def act(client, model: str, action: str, pks: list[int]):
    url = reverse(f"admin:alerts_{model}_changelist")
    return client.post(url, {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_acknowledge_mute_and_unmute_from_the_alert_list(admin_client, admin_user):
    ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    first, second = fire(1), fire(2)
    listing = admin_client.get(reverse("admin:alerts_alert_changelist"))
    assert listing.status_code == 200 and "Spend today 1" in listing.content.decode()

    response = act(admin_client, "alert", "acknowledge", [first.pk])
    assert "1 alert(s) acknowledged." in messages_of(response)
    first.refresh_from_db()
    assert first.acknowledged_at is not None and first.acknowledged_by == admin_user

    before = timezone.now()
    response = act(admin_client, "alert", "mute_1h", [second.pk])
    second.refresh_from_db()
    assert before + timedelta(minutes=59) < second.muted_until <= timezone.now() + timedelta(hours=1)
    assert any("muted until" in m for m in messages_of(response))

    act(admin_client, "alert", "mute_24h", [second.pk])
    second.refresh_from_db()
    assert second.muted_until > timezone.now() + timedelta(hours=23)

    response = act(admin_client, "alert", "unmute", [second.pk])
    second.refresh_from_db()
    assert second.muted_until is None and "1 alert(s) unmuted." in messages_of(response)
    # The alert page shows its notifications (read-only) and cannot be edited.
    page = admin_client.get(reverse("admin:alerts_alert_change", args=[first.pk]))
    assert page.status_code == 200 and "Spend today 1" in page.content.decode()


def test_send_test_notification_from_the_channel_list_reaches_a_real_webhook(admin_client):
    with webhook_receiver() as receiver:
        channel = ChannelFactory(name="hook", kind="webhook", target=receiver.url, secret="k")
        response = act(admin_client, "channel", "send_test", [channel.pk])
        assert any("Test notification queued for 1 channel(s)" in m for m in messages_of(response))
        [note] = Notification.objects.filter(channel=channel)
        assert note.kind == NotificationKind.TEST
        assert notifications_flush() == {"sent": 1}
    [request] = receiver.requests
    assert b"Test notification from costcontrol to hook" in request.body


def test_a_dead_letter_is_listed_retried_from_the_admin_and_then_delivered(admin_client):
    with webhook_receiver(script=[410]) as receiver:
        channel = ChannelFactory(name="hook", kind="webhook", target=receiver.url, is_default=True)
        fire()
        [note] = Notification.objects.all()
        assert notification_deliver(notification_id=note.pk).status == NotificationStatus.FAILED
        dead = admin_client.get(reverse("admin:alerts_notification_changelist"), {"dead": "yes"})
        assert list(dead.context["cl"].result_list) == [note]
        attempts = admin_client.get(reverse("admin:alerts_notification_change", args=[note.pk])).content.decode()
        assert "HTTP 410" in attempts  # every attempt is visible

        # Fix the cause: enable the channel again (admin action), retry the dead letter (admin action).
        response = act(admin_client, "channel", "enable", [channel.pk])
        assert "1 channel(s) enabled." in messages_of(response)
        response = act(admin_client, "notification", "retry", [note.pk])
        assert "1 notification(s) queued again." in messages_of(response)
        assert notifications_flush(now=timezone.now() + timedelta(seconds=1)) == {"sent": 1}
        # Retrying a notification that is not a dead letter does nothing and says so.
        response = act(admin_client, "notification", "retry", [note.pk])
        assert any("were not dead letters" in m for m in messages_of(response))
    note.refresh_from_db()
    assert note.status == NotificationStatus.SENT and len(receiver.requests) == 2


@pytest.fixture
def eager_celery(monkeypatch):
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    monkeypatch.setattr(alerts.apps, "_last_enqueued", 0.0)
    yield
    celery_app.conf.task_always_eager = eager


def test_a_write_that_crosses_a_budget_threshold_raises_its_alert_right_after_commit(
    gpt4o_prices, eager_celery, django_capture_on_commit_callbacks
):
    ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    budget = BudgetFactory(name="OpenAI monthly", scope="provider:openai", amount=Decimal("10"))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        cost_entry_record(provider="openai", model="gpt-4o", amount="8.5", idempotency_key=f"w{next(_keys)}")
    # After commit: the usage signal enqueued one budget evaluation (run inline here), which fired
    # the 80 % level and queued its notification through the outbox.
    assert callbacks
    alert = Alert.objects.get(budget=budget)
    assert (alert.state, alert.level) == (AlertState.FIRING, "warning")
    assert Notification.objects.filter(alert=alert, kind=NotificationKind.FIRING).count() == 1
    assert "Budget 'OpenAI monthly' is at 85 % (8.50 of 10.00 USD)" in alert.message


def test_writes_within_the_debounce_window_enqueue_one_evaluation(
    gpt4o_prices, eager_celery, monkeypatch, django_capture_on_commit_callbacks
):
    calls: list[dict] = []
    monkeypatch.setattr(
        "alerts.tasks.evaluate_budgets.apply_async", lambda *args, **kwargs: calls.append(kwargs), raising=True
    )
    for _ in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            cost_entry_record(provider="openai", model="gpt-4o", amount="0.1", idempotency_key=f"w{next(_keys)}")
    # The first write enqueues; the next four are within 10 seconds and rely on that one (and on
    # the every-minute beat evaluation). The broker is asked once, without retries.
    assert calls == [{"countdown": 1, "retry": False}]
