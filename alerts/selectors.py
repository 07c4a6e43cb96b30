"""Reads about alerts that the outbox, the admin screens and the banner share.

- alert_channels: where an alert goes (the one routing rule: its rule's or budget's channels that
  serve its team, else the default channels of its team).
- alerts_unheard: open alerts that no enabled channel would receive (the admin's banner).
- with_delivery / delivery_words: how many of an alert's notifications exist and what became of
  them, counted from the notifications themselves (never from a counter that can drift from them).
- alert_period_end / alert_window: the period an alert belongs to (mute "until the period ends") and
  the time window whose spend drove it (its cost entries).
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Alert, AlertState, Channel, Notification, NotificationStatus, Window

logger = logging.getLogger(__name__)

NOBODY_TOLD = "no channel: nobody was told"


# --- routing ---------------------------------------------------------------------------------------


def channels_default(*, team_id: int | None = None) -> list[Channel]:
    """The channels of a budget or rule that chose none: the enabled-or-not default ones that serve
    its team (organisation-wide ones, and the team's own)."""
    serving = Q(team__isnull=True) if team_id is None else Q(team__isnull=True) | Q(team=team_id)
    return list(Channel.objects.filter(serving, is_default=True).order_by("pk"))


def alert_channels(alert: Alert, *, defaults: dict[int | None, list[Channel]] | None = None) -> list[Channel]:
    """Where an alert goes. Whatever wrote a budget's or rule's channels (the admin checks them, the
    ORM does not), a team's alert reaches only its team's and organisation-wide channels, and an
    organisation-wide alert only organisation-wide ones. `defaults`: a cache of the default channels
    by team, for callers that route many alerts."""
    if alert.rule_id is not None:
        chosen = list(alert.rule.channels.all())
    elif alert.budget_id is not None:
        chosen = list(alert.budget.settings_from.channels.all())  # a value: its template's
    else:
        chosen = []
    serving = [channel for channel in chosen if channel.serves(alert.team_id)]
    if len(serving) < len(chosen):
        logger.warning("alert %s: skipped %d channel(s) of another team", alert.key, len(chosen) - len(serving))
    if serving:
        return serving
    if defaults is None:
        return channels_default(team_id=alert.team_id)
    if alert.team_id not in defaults:
        defaults[alert.team_id] = channels_default(team_id=alert.team_id)
    return defaults[alert.team_id]


def alert_receivers(alert: Alert, *, defaults: dict[int | None, list[Channel]] | None = None) -> list[Channel]:
    """The channels that would receive this alert now: routed to it, enabled, and taking its level."""
    return [c for c in alert_channels(alert, defaults=defaults) if c.is_enabled and c.accepts(alert.level)]


def alerts_unheard(alerts: QuerySet[Alert]) -> list[Alert]:
    """The open (firing) alerts among `alerts` that no enabled channel would receive."""
    firing = (
        alerts.filter(state=AlertState.FIRING)
        .select_related("rule", "budget")
        .prefetch_related("rule__channels", "budget__channels")
        .order_by("-last_fired_at")
    )
    defaults: dict[int | None, list[Channel]] = {}
    return [alert for alert in firing if not alert_receivers(alert, defaults=defaults)]


# --- what became of an alert's notifications ----------------------------------------------------------

_DELIVERY = {
    "told_sent": (NotificationStatus.SENT,),
    "told_waiting": (NotificationStatus.PENDING, NotificationStatus.SENDING),
    "told_folded": (NotificationStatus.FOLDED,),
    "told_failed": (NotificationStatus.FAILED,),
}


def with_delivery(alerts: QuerySet[Alert]) -> QuerySet[Alert]:
    """`alerts`, each with the counts of its notifications by what became of them (told_sent,
    told_waiting, told_folded, told_failed), as subqueries: no GROUP BY over the change list (its date
    hierarchy and actions read the same queryset)."""
    return alerts.annotate(
        **{
            name: Coalesce(
                Subquery(
                    Notification.objects.filter(alert=OuterRef("pk"), status__in=statuses)
                    .order_by()
                    .values("alert")
                    .annotate(n=Count("pk"))
                    .values("n")
                ),
                0,
            )
            for name, statuses in _DELIVERY.items()
        }
    )


def delivery_counts(alert: Alert) -> dict[str, int]:
    """The counts with_delivery annotates, for one alert (read if it was not annotated)."""
    if all(hasattr(alert, name) for name in _DELIVERY):
        return {name: getattr(alert, name) for name in _DELIVERY}
    return with_delivery(Alert.objects.filter(pk=alert.pk)).values(*_DELIVERY).get()


def delivery_words(alert: Alert) -> str:
    """What became of an alert's notifications, in words: "2 sent", "1 sent, 1 failed", or, with none
    written (no channel took it), "no channel: nobody was told"."""
    counts = delivery_counts(alert)
    if not any(counts.values()):
        return NOBODY_TOLD
    parts = [
        f"{counts[name]} {words}"
        for name, words in (
            ("told_sent", "sent"),
            ("told_waiting", "waiting to be sent"),
            ("told_folded", "held for the hourly digest"),
            ("told_failed", "failed"),
        )
        if counts[name]
    ]
    text = ", ".join(parts)
    if counts["told_failed"] and not (counts["told_sent"] or counts["told_waiting"] or counts["told_folded"]):
        text += ": nobody was told"
    return text


# --- the alert's period and window ----------------------------------------------------------------------


def alert_period_end(alert: Alert, *, now: datetime | None = None) -> datetime | None:
    """When the period the alert belongs to ends (a budget's period; a rule's hour, day or month); None
    when it has none still running (a rolling window, a lifetime budget, a period already over)."""
    now = now or timezone.now()
    end: datetime | None = None
    if alert.budget_period_id is not None:
        end = alert.budget_period.end
    elif alert.rule_id is not None and alert.rule.window in (Window.HOUR, Window.DAY, Window.MONTH):
        from .evaluation import window_bounds  # evaluation imports the services, which import this module

        end = window_bounds(alert.rule.window, now)[1]
    return end if end is not None and end > now else None


def alert_window(alert: Alert) -> tuple[datetime, datetime | None] | None:
    """[start, end) of the time whose spend drove the alert: its budget's period (end None: still open
    and lifetime), or its rule's window when it last fired; None where the rule reads no time window
    (cost per lead of the last batch)."""
    if alert.budget_period_id is not None:
        return alert.budget_period.start, alert.budget_period.end
    if alert.rule_id is not None:
        from .evaluation import NoData, window_bounds

        try:
            return window_bounds(alert.rule.window, alert.last_fired_at)
        except NoData:
            return None
    return None
