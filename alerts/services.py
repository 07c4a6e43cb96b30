"""The alert lifecycle and the outbox (keyword-only verbs, one transaction each).

- alert_fire / alert_resolve move an Alert between firing and resolved. Notifying is a
  compare-and-swap on `next_notify_at` (healthchecks' next_nag_date): of two evaluators that
  see the same alert due, exactly one advances it and writes the Notification rows, in the same
  transaction as the alert change.
- notification_enqueue writes one outbox row (idempotent on its dedup key) and, after commit,
  asks a worker to deliver it. The broker being down loses nothing: the beat sweep
  (alerts.delivery.notifications_flush) delivers whatever is due.
- Delivering is alerts.delivery's: notification_deliver claims one row (conditional UPDATE), sends it outside any transaction,
  and records the attempt: sent; retried later with exponential backoff (transient errors); or a
  dead letter, the channel disabled with the reason (permanent errors).
- A worker killed mid-send leaves its claim behind. The same Celery task delivered again (acks_late:
  the broker hands an unacknowledged message out again only once its worker is gone) takes that
  claim over at once, the lost attempt logged; anyone else waits for the claim's lease to run out.
  What stays open: a receiver that accepted the message just before the worker died, before the
  SENT status was committed, gets it twice, with the same delivery id (the dedup key) both times.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from budgets.levels import Level, level_label
from core.money import format_money

from .models import (
    Alert,
    AlertSource,
    AlertState,
    Channel,
    ChannelKind,
    Notification,
    NotificationKind,
)
from .selectors import alert_channels

logger = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(minutes=5)


# --- channels -------------------------------------------------------------------------------------


DEFAULT_EMAIL_CHANNEL = "Default email"
DEFAULT_SLACK_CHANNEL = "Default Slack"


def _channel_default_ensure(*, name: str, kind: str, target: str, **fields: Any) -> Channel:
    """The channel `name`, created with these fields unless it exists; a channel of this kind and target
    under another name (renamed in the admin) stands for it. Created once: admin edits are kept."""
    renamed = Channel.objects.filter(kind=kind, target=target).exclude(name=name).order_by("pk").first()
    if renamed is not None:
        return renamed
    channel, _ = Channel.objects.get_or_create(name=name, defaults={"kind": kind, "target": target, **fields})
    return channel


def channel_default_email_ensure() -> Channel | None:
    """The default email channel (alerts and the daily report) to EMAIL_ALERT_RECIPIENTS, created once.
    None when email alerts are off (ENABLE_EMAIL_ALERTS) or no recipients are set."""
    addresses = [a for a in settings.EMAIL_ALERT_RECIPIENTS if a]
    if not settings.ENABLE_EMAIL_ALERTS or not addresses:
        return None
    return _channel_default_ensure(
        name=DEFAULT_EMAIL_CHANNEL,
        kind=ChannelKind.EMAIL,
        target=", ".join(addresses),
        is_default=True,
        receives_reports=True,
    )


def channel_default_slack_ensure() -> Channel | None:
    """The default Slack channel to SLACK_WEBHOOK_URL, created once. None when Slack alerts are off
    (ENABLE_SLACK_ALERTS, on by default when the URL is set).

    The URL is checked as a target typed in the admin is (a Slack URL, at an address channels may
    reach), on every call: a bad one is a ValidationError naming SLACK_WEBHOOK_URL, and nothing is written.
    """
    if not settings.ENABLE_SLACK_ALERTS:
        return None
    url = (settings.SLACK_WEBHOOK_URL or "").strip()
    if not url:
        raise ValidationError(
            {
                "SLACK_WEBHOOK_URL": "is empty while ENABLE_SLACK_ALERTS is on: set the incoming-webhook URL, "
                "or turn ENABLE_SLACK_ALERTS off"
            }
        )
    fields: dict[str, Any] = {"kind": ChannelKind.SLACK, "target": url, "is_default": True}
    try:
        Channel(name=DEFAULT_SLACK_CHANNEL, **fields).full_clean(validate_unique=False)
    except ValidationError as exc:
        raise ValidationError({"SLACK_WEBHOOK_URL": exc.messages}) from None
    return _channel_default_ensure(name=DEFAULT_SLACK_CHANNEL, **fields)


# --- the outbox --------------------------------------------------------------------------------------


def deliver_after_commit(ids: Sequence[int]) -> None:
    if not ids:
        return

    def enqueue() -> None:
        from .tasks import deliver_notification

        for pk in ids:
            try:
                deliver_notification.delay(pk)
            except Exception:  # the broker is down: the beat sweep delivers it
                logger.warning("could not enqueue notification %s; the sweep will deliver it", pk, exc_info=True)

    transaction.on_commit(enqueue)


def notification_enqueue(
    *,
    channel: Channel,
    kind: str,
    dedup_key: str,
    subject: str,
    text: str,
    html: str = "",
    payload: dict[str, Any] | None = None,
    alert: Alert | None = None,
    level: str = "",
    now: datetime | None = None,
) -> Notification | None:
    """Write one outbox row (None if its dedup key was already written) and deliver it after commit."""
    now = now or timezone.now()
    with transaction.atomic():
        try:
            with transaction.atomic():
                notification = Notification.objects.create(
                    channel=channel,
                    alert=alert,
                    kind=kind,
                    level=level,
                    dedup_key=dedup_key[:450],
                    subject=subject[:300],
                    text=text,
                    html=html,
                    payload=payload or {},
                    created_at=now,
                    next_attempt_at=now,
                )
        except IntegrityError:
            return None
        deliver_after_commit([notification.pk])
    return notification


# --- the alert lifecycle ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertChange:
    alert: Alert
    notified: int  # how many notifications were written


def _notify(alert: Alert, *, kind: str, sequence: int, now: datetime) -> int:
    """Write the notifications of one alert event (inside the caller's transaction)."""
    written = 0
    admin_url = _admin_url(alert)
    text = alert.message if kind != NotificationKind.RESOLVED else f"Resolved: {alert.message}"
    if admin_url:
        text = f"{text}\n\n{admin_url}"
    prefix = {NotificationKind.RESOLVED: "[resolved]", NotificationKind.REPEAT: "[still firing]"}.get(kind, "")
    subject = f"{prefix} [{alert.label}] {alert.title}".strip() if prefix else f"[{alert.label}] {alert.title}"
    for channel in alert_channels(alert):
        if not channel.accepts(alert.level):
            continue
        created = notification_enqueue(
            channel=channel,
            kind=kind,
            dedup_key=f"{alert.key}#{sequence}:{kind}:{channel.pk}",
            subject=subject,
            text=text,
            payload={
                "alert": {
                    "id": alert.pk,
                    "key": alert.key,
                    "source": alert.source,
                    "scope": alert.scope,
                    "level": alert.level,
                    "label": alert.label,
                    "state": AlertState.RESOLVED if kind == NotificationKind.RESOLVED else AlertState.FIRING,
                    "value": None if alert.value is None else f"{alert.value.normalize():f}",
                    "threshold": None if alert.threshold is None else f"{alert.threshold.normalize():f}",
                    "currency": alert.currency,
                    "url": admin_url,
                }
            },
            alert=alert,
            level=alert.level,
            now=now,
        )
        written += created is not None
    return written


def _admin_url(alert: Alert) -> str:
    from django.urls import reverse

    base = settings.SITE_URL.rstrip("/")
    if alert.budget_id is not None:
        return base + reverse("admin:budgets_budget_change", args=[alert.budget_id])
    return base + reverse("admin:alerts_alert_change", args=[alert.pk])


def alert_fire(
    *,
    key: str,
    source: str,
    level: str,
    scope: str,
    title: str,
    message: str,
    value: Decimal | None = None,
    threshold: Decimal | None = None,
    currency: str = "",
    rule: Any = None,
    budget: Any = None,
    budget_period: Any = None,
    cooldown: timedelta | None = None,
    announce: bool = True,
    now: datetime | None = None,
) -> AlertChange:
    """Open (or keep open) the alert `key` and notify if it is due.

    cooldown=None: notify once per incident (budget levels: once per period, the period is in the
    key). Otherwise re-notify no sooner than `cooldown` while it stays firing. A resolved alert that
    fires again is a new incident of the same key: it notifies again, unless its source is a budget
    (a budget level is announced once per period). `announce=False`: an alert that opens is not
    told on its own (a digest tells it: budget_digest_notify); it counts as told.
    """
    now = now or timezone.now()
    # The alert belongs to its rule's team, else its budget's (None: organisation-wide).
    team_id = getattr(rule, "team_id", None) or getattr(budget, "team_id", None)
    with transaction.atomic():
        alert, created = Alert.objects.get_or_create(
            key=key,
            defaults={
                "source": source,
                "team_id": team_id,
                "rule": rule,
                "budget": budget,
                "budget_period": budget_period,
                "scope": scope,
                "level": level,
                "title": title,
                "message": message,
                "value": value,
                "threshold": threshold,
                "currency": currency,
                "first_fired_at": now,
                "last_fired_at": now,
                "next_notify_at": now,
            },
        )
        if not created:
            reopened = Alert.objects.filter(pk=alert.pk, state=AlertState.RESOLVED).update(
                state=AlertState.FIRING,
                resolved_at=None,
                last_fired_at=now,
                acknowledged_at=None,
                acknowledged_by=None,
                next_notify_at=None if source in (AlertSource.BUDGET, AlertSource.FORECAST) else now,
            )
            # The latest figures, for the admin and the next message.
            Alert.objects.filter(pk=alert.pk).update(
                title=title, message=message, value=value, threshold=threshold, level=level, team_id=team_id
            )
            if reopened:
                logger.info("alert %s fires again", key)
        if not announce:  # told in a digest: due no more, as if announced
            Alert.objects.filter(pk=alert.pk, state=AlertState.FIRING).update(next_notify_at=None)
        # Compare-and-swap: exactly one evaluator advances a due alert and writes its notifications.
        due = Q(pk=alert.pk, state=AlertState.FIRING, next_notify_at__lte=now) & (
            Q(muted_until__isnull=True) | Q(muted_until__lte=now)
        )
        if not created:
            due &= Q(acknowledged_at__isnull=True)
        won = Alert.objects.filter(due).update(
            next_notify_at=None if cooldown is None else now + cooldown, notify_count=F("notify_count") + 1
        )
        alert.refresh_from_db()
        notified = 0
        if won:
            kind = NotificationKind.FIRING if alert.last_fired_at == now else NotificationKind.REPEAT
            notified = _notify(alert, kind=kind, sequence=alert.notify_count, now=now)
            if not notified:
                # No channel took it: nobody was told, so it does not count as announced (its resolve
                # is not announced either, and the next announcement reuses the unused sequence).
                Alert.objects.filter(pk=alert.pk).update(notify_count=F("notify_count") - 1)
                alert.notify_count -= 1
    return AlertChange(alert=alert, notified=notified)


DIGEST_SHOWN = 10  # the values a digest names, the highest utilisation first


def budget_digest_notify(*, template: Any, level: str, statuses: Sequence[Any], now: datetime) -> int:
    """One message for many values of a template that reached `level` in one alert pass ("37 end users
    of 'Daily per user' are at warning"), instead of one each; routed as the values' alerts are
    (alert_channels). The values' own alerts are in the admin. Returns how many were written."""
    from django.urls import reverse

    ranked = sorted(statuses, key=lambda s: (s.utilisation is not None, s.utilisation or 0), reverse=True)
    count, label = len(statuses), level_label(level)
    shown = ranked[:DIGEST_SHOWN]
    url = settings.SITE_URL.rstrip("/") + reverse("admin:budgets_budget_change", args=[template.pk])
    subject = f"[{label}] Budget '{template.name}': {count:,} values {label}"
    lines = [f"{count:,} values of the budget template '{template.name}' ({template.scope}) reached {label}:", ""]
    lines += [
        f"- {s.budget.value}: "
        + ("over a zero limit" if s.utilisation is None else f"{s.utilisation} %")
        + f" ({format_money(s.spent, s.currency)} of {format_money(s.limit, s.currency)})"
        for s in shown
    ]
    if count > len(shown):
        lines.append(f"- ... and {count - len(shown):,} more")
    lines += ["", url]
    period = shown[0].period.start.astimezone(UTC)
    payload = {
        "digest": {
            "budget": {"id": template.pk, "name": template.name, "scope": template.scope},
            "level": level,
            "count": count,
            "values": [
                {"value": s.budget.value, "spent": f"{s.spent:f}", "limit": f"{s.limit:f}", "currency": s.currency}
                for s in shown
            ],
            "url": url,
        }
    }
    probe = Alert(budget=template, team_id=template.team_id, level=level, key=f"digest:{template.pk}")
    written = 0
    for channel in alert_channels(probe):
        if channel.accepts(level):
            written += (
                notification_enqueue(
                    channel=channel,
                    kind=NotificationKind.FIRING,
                    dedup_key=f"digest:budget:{template.pk}:{period:%Y%m%dT%H%M}:{level}:{now.isoformat()}:{channel.pk}",
                    subject=subject,
                    text="\n".join(lines),
                    payload=payload,
                    level=level,
                    now=now,
                )
                is not None
            )
    return written


def alert_resolve(*, key: str, notify: bool = True, now: datetime | None = None) -> AlertChange | None:
    """Close the firing alert `key`; tell its channels if it had told them it fired. None if not firing."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = Alert.objects.filter(key=key, state=AlertState.FIRING).update(
            state=AlertState.RESOLVED, resolved_at=now
        )
        if not changed:
            return None
        alert = Alert.objects.get(key=key)
        notified = 0
        if notify and alert.notify_count > 0 and not alert.is_muted:
            notified = _notify(alert, kind=NotificationKind.RESOLVED, sequence=alert.notify_count, now=now)
    return AlertChange(alert=alert, notified=notified)


def alert_acknowledge(*, alert: Alert, user: Any = None, now: datetime | None = None) -> bool:
    """Stop repeat notifications of a firing alert (its resolve is still announced)."""
    now = now or timezone.now()
    return bool(
        Alert.objects.filter(pk=alert.pk, state=AlertState.FIRING, acknowledged_at__isnull=True).update(
            acknowledged_at=now, acknowledged_by=user
        )
    )


def alert_mute(*, alert: Alert, until: datetime | None) -> None:
    """Send nothing about this alert until `until` (None: unmute)."""
    Alert.objects.filter(pk=alert.pk).update(muted_until=until)


# --- the seeds' default rules --------------------------------------------------------------------------


def default_rules() -> list[dict[str, Any]]:
    from .models import Metric, Window

    return [
        {
            "name": "Spend this hour",
            "metric": Metric.SPEND,
            "window": Window.HOUR,
            "threshold": settings.ALERT_SPEND_HOURLY_THRESHOLD,
            "level": Level.WARNING,
        },
        {
            "name": "Spend today",
            "metric": Metric.SPEND,
            "window": Window.DAY,
            "threshold": settings.ALERT_SPEND_DAILY_THRESHOLD,
            "level": Level.WARNING,
        },
        {
            "name": "Cost per lead, last batch",
            "metric": Metric.COST_PER_LEAD,
            "window": Window.LAST_BATCH,
            "threshold": settings.COST_PER_LEAD_THRESHOLD,
            "level": Level.WARNING,
        },
        {
            "name": "Cost per lead, this month",
            "metric": Metric.COST_PER_LEAD,
            "window": Window.MONTH,
            "threshold": settings.COST_PER_LEAD_THRESHOLD,
            "level": Level.WARNING,
        },
        {
            "name": "Cost per lead regression, last batch",
            "metric": Metric.COST_PER_LEAD_CHANGE,
            "window": Window.LAST_BATCH,
            "threshold": settings.COST_PER_LEAD_REGRESSION_PERCENT,
            "level": Level.WARNING,
        },
        {
            "name": "GPU cost today",
            "metric": Metric.GPU_COST,
            "window": Window.DAY,
            "threshold": settings.GPU_COST_DAILY_THRESHOLD,
            "level": Level.WARNING,
        },
        {
            "name": "GPU cost this month",
            "metric": Metric.GPU_COST,
            "window": Window.MONTH,
            "threshold": settings.GPU_COST_MONTHLY_THRESHOLD,
            "level": Level.WARNING,
        },
        {
            "name": "Error rate, last hour",
            "metric": Metric.ERROR_RATE,
            "window": Window.LAST_HOUR,
            "threshold": settings.ALERT_ERROR_RATE_PERCENT,
            "level": Level.CRITICAL,
        },
        {
            "name": "Rate-limit hits, last 5 minutes",
            "metric": Metric.RATE_LIMITED,
            "window": Window.LAST_5_MINUTES,
            "threshold": Decimal(0),
            "level": Level.WARNING,
            "cooldown": timedelta(minutes=15),
        },
        {
            "name": "Tokens, last hour",
            "metric": Metric.TOKENS,
            "window": Window.LAST_HOUR,
            "threshold": settings.ALERT_TOKENS_HOURLY_THRESHOLD,
            "level": Level.INFO,
        },
        {
            "name": "Unpriced usage today",
            "metric": Metric.UNPRICED,
            "window": Window.DAY,
            "threshold": Decimal(0),
            "level": Level.WARNING,
        },
    ]


def alert_rules_defaults_ensure() -> int:
    """Create the seeds' default rules that do not exist yet (by name). Returns how many were created."""
    from .models import AlertRule

    created = 0
    for spec in default_rules():
        name = spec.pop("name")
        _, made = AlertRule.objects.get_or_create(name=name, defaults={"scope": "global", **spec})
        created += made
    return created
