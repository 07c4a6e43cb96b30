"""Delivery through the outbox to real servers on 127.0.0.1: retries, permanent failures, digests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail

from alerts.delivery import channel_test_send, notification_deliver, notification_retry, notifications_flush
from alerts.models import Channel, DeliveryAttempt, Notification, NotificationStatus
from alerts.services import alert_fire, notification_enqueue
from alerts.transports import DELIVERY_HEADER, SIGNATURE_HEADER, webhook_signature
from tests.alerts.servers import smtp_server, webhook_receiver
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def fire(n: int = 0, *, now: datetime = T0) -> None:
    alert_fire(
        key=f"rule:1:scope-{n}",
        source="rule",
        level="warning",
        scope="global",
        title=f"Spend today {n}",
        message=f"Rule 'Spend today': spend of global today is {600 + n}.00 USD, above 500.00 USD.",
        value=Decimal(600 + n),
        threshold=Decimal(500),
        currency="USD",
        cooldown=timedelta(hours=1),
        now=now,
    )


def test_a_webhook_that_fails_with_503_is_retried_with_backoff_and_delivered_exactly_once(settings):
    with webhook_receiver(script=[503, 503, 503]) as receiver:
        channel = ChannelFactory(name="hook", kind="webhook", target=receiver.url, secret="s3cret", is_default=True)
        fire(now=T0)
        [note] = Notification.objects.all()
        moments = [T0 + timedelta(seconds=s) for s in (0, 29, 30, 89, 90, 210, 300)]
        results = []
        for moment in moments:
            with time_machine.travel(moment, tick=False):
                results.append(notifications_flush(now=moment))
        # 30 s, then 60 s, then 120 s apart; not before.
        assert results == [{"retry": 1}, {}, {"retry": 1}, {}, {"retry": 1}, {"sent": 1}, {}]
    note.refresh_from_db()
    assert (note.status, note.attempts) == (NotificationStatus.SENT, 4)
    assert list(DeliveryAttempt.objects.filter(notification=note).order_by("pk").values_list("ok", flat=True)) == [
        False,
        False,
        False,
        True,
    ]
    [delivered] = [r for r in receiver.requests if r.headers["_status"] == "200"]
    assert len(receiver.requests) == 4
    assert delivered.headers[SIGNATURE_HEADER] == webhook_signature("s3cret", delivered.body)
    assert delivered.headers[DELIVERY_HEADER] == note.dedup_key
    body = json.loads(delivered.body)
    assert body["alert"]["value"] == "600" and body["alert"]["level"] == "warning" and body["kind"] == "firing"
    assert channel.is_enabled


def test_a_4xx_answer_is_permanent_the_channel_is_disabled_and_the_dead_letter_can_be_retried():
    with webhook_receiver(script=[404]) as receiver:
        channel = ChannelFactory(name="hook", kind="webhook", target=receiver.url, is_default=True)
        fire()
        [note] = Notification.objects.all()
        assert notification_deliver(notification_id=note.pk, now=T0).status == "failed"
        note.refresh_from_db()
        channel.refresh_from_db()
        assert note.status == NotificationStatus.FAILED and "HTTP 404" in note.last_error
        assert not channel.is_enabled and "HTTP 404" in channel.disabled_reason
        # Fixed: enable the channel, retry the dead letter.
        Channel.objects.filter(pk=channel.pk).update(is_enabled=True, disabled_reason="")
        assert notification_retry(notification=note, now=T0)
        assert notifications_flush(now=T0 + timedelta(seconds=1)) == {"sent": 1}
        assert len(receiver.requests) == 2


def test_429_is_transient():
    with webhook_receiver(script=[429]) as receiver:
        ChannelFactory(name="hook", kind="webhook", target=receiver.url, is_default=True)
        fire()
        assert notifications_flush(now=T0) == {"retry": 1}
        assert notifications_flush(now=T0 + timedelta(seconds=30)) == {"sent": 1}


def test_over_the_hourly_limit_notifications_fold_into_one_digest():
    with webhook_receiver() as receiver:
        ChannelFactory(name="hook", kind="webhook", target=receiver.url, is_default=True, max_per_hour=2)
        for n in range(5):
            fire(n, now=T0)
        assert notifications_flush(now=T0) == {"sent": 2, "skipped": 3}
        statuses = list(Notification.objects.order_by("pk").values_list("status", flat=True))
        assert statuses.count("folded") == 3
        digest = Notification.objects.get(kind="digest")
        assert digest.next_attempt_at == T0 + timedelta(hours=1)
        assert notifications_flush(now=T0 + timedelta(minutes=59)) == {}
        assert notifications_flush(now=T0 + timedelta(hours=1)) == {"sent": 1}
    assert len(receiver.requests) == 3
    body = json.loads(receiver.requests[-1].body)
    assert body["kind"] == "digest" and len(body["digest"]) == 3
    assert "3 notifications were held back" in body["text"]


def test_email_stops_mid_run_queues_and_goes_out_once_when_the_server_returns(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    with smtp_server() as (controller, sink):
        port = controller.port
        settings.EMAIL_PORT = port
        ChannelFactory(name="mail", kind="email", target="ops@example.com, cfo@example.com", is_default=True)
        fire(0)
        assert notifications_flush(now=T0) == {"sent": 1}
    # The server is down: three more alerts queue.
    for n in (1, 2, 3):
        fire(n)
    assert notifications_flush(now=T0 + timedelta(seconds=1)) == {"retry": 3}
    assert notifications_flush(now=T0 + timedelta(seconds=31)) == {"retry": 3}
    with smtp_server(port=port) as (controller, sink):
        assert notifications_flush(now=T0 + timedelta(seconds=100)) == {"sent": 3}
        assert notifications_flush(now=T0 + timedelta(hours=2)) == {}
        subjects = sorted(envelope.content.decode().split("Subject: ")[1].splitlines()[0] for envelope in sink.messages)
    assert subjects == [f"[warning] Spend today {n}" for n in (1, 2, 3)]
    assert all(envelope.rcpt_tos == ["ops@example.com", "cfo@example.com"] for envelope in sink.messages)
    assert Notification.objects.filter(status="sent").count() == 4


def test_an_address_the_server_refuses_is_permanent(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"

    class Refusing:
        async def handle_RCPT(self, server, session, envelope, address, options):
            return "550 no such user"

    with smtp_server(handler=Refusing()) as (controller, _):
        settings.EMAIL_PORT = controller.port
        channel = ChannelFactory(name="mail", kind="email", target="nobody@example.com", is_default=True)
        fire()
        assert notifications_flush(now=T0) == {"failed": 1}
    channel.refresh_from_db()
    assert not channel.is_enabled and "refused" in channel.disabled_reason


def test_the_locmem_backend_gets_html_and_text_for_reports():
    channel = ChannelFactory(name="mail", kind="email", target="ops@example.com")
    notification_enqueue(
        channel=channel, kind="report", dedup_key="report:x", subject="Daily", text="plain", html="<b>rich</b>"
    )
    assert notifications_flush() == {"sent": 1}
    [message] = mail.outbox
    assert message.body == "plain" and message.alternatives[0][0] == "<b>rich</b>"


def test_apprise_kinds_deliver_through_apprise_to_a_local_json_endpoint():
    with webhook_receiver(script=[500]) as receiver:
        url = receiver.url.replace("http://", "json://")
        channel = ChannelFactory(name="any", kind="apprise", target=url)
        channel_test_send(channel=channel, now=T0)
        assert notifications_flush(now=T0) == {"retry": 1}
        assert notifications_flush(now=T0 + timedelta(seconds=30)) == {"sent": 1}
    body = json.loads(receiver.requests[-1].body)
    assert body["title"].startswith("Test notification from costcontrol")


@pytest.mark.parametrize(
    ("kind", "target", "ok"),
    [
        ("slack", "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX", True),
        ("slack", "https://discord.com/api/webhooks/123/abc", False),
        ("discord", "https://discord.com/api/webhooks/123/abc", True),
        ("pagerduty", "pagerduty://integrationkey@apikey", True),
        ("webhook", "ftp://example.com/x", False),
        ("email", "ops@example.com, not-an-address", False),
        ("apprise", "garbage", False),
    ],
)
def test_channel_targets_are_validated_naming_the_field(kind, target, ok):
    from django.core.exceptions import ValidationError

    channel = Channel(name="c", kind=kind, target=target)
    if ok:
        channel.full_clean()
    else:
        with pytest.raises(ValidationError) as excinfo:
            channel.full_clean()
        assert "target" in excinfo.value.message_dict
