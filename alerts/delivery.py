"""Delivering the outbox: claiming a due notification (a conditional UPDATE), sending it outside any
transaction through its channel's transport, and recording the attempt (sent; retried later with exponential
backoff; or failed for good), the sweep that delivers whatever is due, a manual retry and a channel's test
message. Writing notifications is alerts.services' (notification_enqueue)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from budgets.levels import Level

from .models import (
    Channel,
    DeliveryAttempt,
    Notification,
    NotificationKind,
    NotificationStatus,
)
from .services import CLAIM_LEASE, deliver_after_commit, notification_enqueue
from .transports import Message, TransportError, transport_for

logger = logging.getLogger(__name__)


def backoff(attempts: int) -> timedelta:
    """Wait before attempt n+1: base * 2^(n-1), capped (30 s, 1 min, 2 min, ... 1 h)."""
    base = settings.NOTIFICATION_RETRY_BASE_SECONDS
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), settings.NOTIFICATION_RETRY_MAX_SECONDS))


@dataclass(frozen=True)
class DeliveryResult:
    status: str  # sent, retry, failed, folded, skipped
    error: str = ""


def _claimable(now: datetime, token: str) -> Q:
    """Due, or claimed by a delivery that died: after its lease, or at once by the same task run again."""
    claimable = Q(status=NotificationStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=NotificationStatus.SENDING, claimed_until__lt=now
    )
    if token:
        claimable |= Q(status=NotificationStatus.SENDING, claimed_by=token)
    return claimable


def _claim(notification_id: int, now: datetime, token: str) -> Notification | None:
    """Take a due notification for one delivery, as `token`. Decides the channel's rate limit under
    the channel's row lock. Taking over a dead delivery's claim logs its lost attempt."""
    with transaction.atomic():
        notification = (
            Notification.objects.select_related("channel")
            .filter(pk=notification_id)
            .filter(_claimable(now, token))
            .first()
        )
        if notification is None:
            return None
        channel = Channel.objects.select_for_update().get(pk=notification.channel_id)
        if not channel.is_enabled:
            return None  # stays pending: delivered once the channel is enabled again
        if channel.max_per_hour and notification.kind not in (NotificationKind.TEST, NotificationKind.DIGEST):
            hour_ago = now - timedelta(hours=1)
            recent = (
                Notification.objects.filter(channel=channel)
                .filter(
                    Q(status=NotificationStatus.SENT, sent_at__gt=hour_ago)
                    | Q(status=NotificationStatus.SENDING, claimed_until__gte=now)
                )
                .exclude(pk=notification.pk)
            )
            if recent.count() >= channel.max_per_hour:
                _fold(notification, channel=channel, now=now)
                return None
        # Compare-and-swap on the claim as read: of two takers of the same dead claim, one wins.
        claimed = Notification.objects.filter(
            pk=notification.pk,
            status=notification.status,
            claimed_until=notification.claimed_until,
            claimed_by=notification.claimed_by,
        ).update(
            status=NotificationStatus.SENDING,
            claimed_until=now + CLAIM_LEASE,
            claimed_by=token,
            attempts=F("attempts") + 1,
        )
        if not claimed:
            return None
        if notification.status == NotificationStatus.SENDING:
            _log_lost_attempt(notification, token=token)
        notification.refresh_from_db()
        notification.channel = channel
        return notification


def _log_lost_attempt(notification: Notification, *, token: str) -> None:
    """The claim taken over belonged to a delivery that never finished: its worker died mid-send."""
    assert notification.claimed_until is not None
    same = notification.claimed_by == token
    DeliveryAttempt.objects.create(
        notification=notification,
        started_at=notification.claimed_until - CLAIM_LEASE,
        duration_ms=0,
        ok=False,
        error="lost: the worker sending it stopped before the attempt ended "
        f"({'the same task, delivered again' if same else 'its claim ran out'}); "
        "the receiver may or may not have got it",
    )
    logger.warning(
        "notification %s: taking over the claim of a delivery that never finished (%s)",
        notification.pk,
        "same task redelivered" if same else "lease ran out",
    )


def _fold(notification: Notification, *, channel: Channel, now: datetime) -> None:
    """Over the channel's hourly limit: fold into the channel's pending digest, sent when the hour allows."""
    digest = Notification.objects.filter(
        channel=channel, kind=NotificationKind.DIGEST, status=NotificationStatus.PENDING
    ).first()
    if digest is None:
        oldest = (
            Notification.objects.filter(
                channel=channel, status=NotificationStatus.SENT, sent_at__gt=now - timedelta(hours=1)
            )
            .order_by("sent_at")
            .values_list("sent_at", flat=True)
            .first()
        )
        digest = Notification.objects.create(
            channel=channel,
            kind=NotificationKind.DIGEST,
            dedup_key=f"digest:{channel.pk}:{now.isoformat()}:{notification.pk}",
            subject=f"Digest of notifications held back on {channel.name}",
            text="",
            created_at=now,
            next_attempt_at=(oldest or now) + timedelta(hours=1),
        )
    Notification.objects.filter(pk=notification.pk).update(status=NotificationStatus.FOLDED, digest=digest)
    logger.info(
        "channel %s over %s/h: notification %s folded into digest %s",
        channel.pk,
        channel.max_per_hour,
        notification.pk,
        digest.pk,
    )


def _message(notification: Notification) -> Message:
    if notification.kind == NotificationKind.DIGEST:
        folded = list(notification.folded.order_by("created_at", "pk"))
        lines = [
            f"{len(folded)} notifications were held back by this channel's limit of "
            f"{notification.channel.max_per_hour} per hour:",
            "",
        ]
        lines += [f"- {n.created_at:%Y-%m-%d %H:%M} {n.subject}" for n in folded]
        return Message(
            subject=f"{notification.subject} ({len(folded)})",
            text="\n".join(lines),
            kind=notification.kind,
            delivery_id=notification.dedup_key,
            payload={"digest": [{"subject": n.subject, "text": n.text, **n.payload} for n in folded]},
        )
    return Message(
        subject=notification.subject,
        text=notification.text,
        html=notification.html,
        level=notification.level,
        kind=notification.kind,
        delivery_id=notification.dedup_key,
        payload=notification.payload,
    )


def notification_deliver(*, notification_id: int, now: datetime | None = None, claim_token: str = "") -> DeliveryResult:
    """Deliver one notification if it is due; record the attempt. Safe to call twice at once.

    claim_token: who delivers (the Celery task id): a delivery run again with the same token takes
    over the claim its earlier run left behind. Empty: a token of this call alone.
    """
    now = now or timezone.now()
    notification = _claim(notification_id, now, claim_token or f"call:{uuid.uuid4().hex}")
    if notification is None:
        return DeliveryResult(status="skipped")
    channel = notification.channel
    started = time.monotonic()
    error: TransportError | None = None
    try:
        transport_for(channel).notify(_message(notification))
    except TransportError as exc:
        error = exc
    except Exception as exc:  # a bug or an unexpected library error: retried, and logged loudly
        logger.exception("notification %s: unexpected error from the %s transport", notification.pk, channel.kind)
        error = TransportError(f"{exc.__class__.__name__}: {exc}")
    finished = timezone.now() if now is None else now
    duration = int((time.monotonic() - started) * 1000)
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            notification=notification,
            started_at=now,
            duration_ms=duration,
            ok=error is None,
            permanent=bool(error and error.permanent),
            error="" if error is None else error.message,
        )
        mine = Notification.objects.filter(
            pk=notification.pk, status=NotificationStatus.SENDING, claimed_by=notification.claimed_by
        )
        if error is None:
            mine.update(status=NotificationStatus.SENT, sent_at=finished, claimed_until=None, last_error="")
            return DeliveryResult(status="sent")
        if error.permanent:
            mine.update(status=NotificationStatus.FAILED, claimed_until=None, last_error=error.message)
            Channel.objects.filter(pk=channel.pk).update(
                is_enabled=False, disabled_reason=f"{now:%Y-%m-%d %H:%M} UTC: {error.message}"
            )
            logger.warning("channel %s disabled: %s", channel.name, error.message)
            return DeliveryResult(status="failed", error=error.message)
        if notification.attempts >= settings.NOTIFICATION_MAX_ATTEMPTS:
            mine.update(status=NotificationStatus.FAILED, claimed_until=None, last_error=error.message)
            return DeliveryResult(status="failed", error=error.message)
        mine.update(
            status=NotificationStatus.PENDING,
            claimed_until=None,
            last_error=error.message,
            next_attempt_at=now + backoff(notification.attempts),
        )
        return DeliveryResult(status="retry", error=error.message)


def notifications_flush(*, now: datetime | None = None, limit: int = 200, claim_token: str = "") -> dict[str, int]:
    """Beat: deliver what is due (the safety net behind the per-notification tasks). claim_token as
    for notification_deliver: this sweep run again takes over what its earlier run left claimed."""
    now = now or timezone.now()
    token = claim_token or f"sweep:{uuid.uuid4().hex}"
    due = list(
        Notification.objects.filter(_claimable(now, token))
        .exclude(status=NotificationStatus.PENDING, channel__is_enabled=False)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    counts: dict[str, int] = {}
    for pk in due:
        result = notification_deliver(notification_id=pk, now=now, claim_token=token)
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts


def notification_retry(*, notification: Notification, now: datetime | None = None) -> bool:
    """Dead letter -> pending again (the admin's retry). Re-enables nothing: fix the channel first."""
    now = now or timezone.now()
    changed = Notification.objects.filter(pk=notification.pk, status=NotificationStatus.FAILED).update(
        status=NotificationStatus.PENDING, next_attempt_at=now, attempts=0
    )
    if changed:
        deliver_after_commit([notification.pk])
    return bool(changed)


def channel_test_send(*, channel: Channel, now: datetime | None = None) -> Notification:
    """Queue a test notification for a channel (the admin's "send test notification")."""
    now = now or timezone.now()
    notification = notification_enqueue(
        channel=channel,
        kind=NotificationKind.TEST,
        dedup_key=f"test:{channel.pk}:{now.isoformat()}",
        subject=f"Test notification from costcontrol to {channel.name}",
        text=f"This is a test of the channel {channel.name!r} ({channel.get_kind_display()}). "
        "If you can read it, alerts will reach you here.",
        level=Level.INFO,
        now=now,
    )
    assert notification is not None
    return notification


def channels_enable(*, channels: Iterable[Channel]) -> int:
    return Channel.objects.filter(pk__in=[c.pk for c in channels]).update(is_enabled=True, disabled_reason="")
