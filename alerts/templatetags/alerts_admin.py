"""The admin's banner for open alerts that nobody hears about (the index and the cost dashboard)."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings
from django.urls import reverse
from django.utils.http import urlencode

from core.teams import sees_every_team, team_scoped

from ..models import Alert, AlertState
from ..selectors import alerts_unheard

register = template.Library()

NAMED = 3  # alerts named in the banner; the rest are counted


@register.inclusion_tag("admin/alerts/unheard_banner.html", takes_context=True)
def unheard_alerts_banner(context: Any) -> dict[str, Any]:
    """While open alerts the user may see (their teams', or all for a superuser) have no enabled channel
    to go to: how many, the first few, and where to add a channel."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not (user.is_active and user.is_staff and user.has_perm("alerts.view_alert")):
        return {"count": 0}
    unheard = alerts_unheard(team_scoped(Alert.objects.all(), request, "team"))
    if not unheard:
        return {"count": 0}
    can_add = user.has_perm("alerts.add_channel")
    return {
        "count": len(unheard),
        "first": [
            {"title": alert.title, "url": reverse("admin:alerts_alert_change", args=[alert.pk])}
            for alert in unheard[:NAMED]
        ],
        "more": max(len(unheard) - NAMED, 0),
        "alert_email_unset": sees_every_team(request)
        and settings.ENABLE_EMAIL_ALERTS
        and not [a for a in settings.EMAIL_ALERT_RECIPIENTS if a],
        "add_url": reverse("admin:alerts_channel_add" if can_add else "admin:alerts_channel_changelist"),
        "list_url": reverse("admin:alerts_alert_changelist")
        + "?"
        + urlencode({"state__exact": AlertState.FIRING, "heard": "nowhere"}),
    }
