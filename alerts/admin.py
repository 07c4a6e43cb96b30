"""Alerts in the admin: rules, incidents (acknowledge, mute), channels (send a test), the outbox
with every delivery attempt, and the dead letters (retry). Actions call services and report."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from budgets.admin import ScopeChoiceAdminMixin, forecast_badge, level_badge
from core.teams import TeamScopedAdminMixin, sees_every_team, team_list_filter, user_teams

from .models import (
    Alert,
    AlertRule,
    AlertSource,
    AlertState,
    Channel,
    DeliveryAttempt,
    Notification,
    NotificationStatus,
)
from .services import (
    alert_acknowledge,
    alert_mute,
    channel_test_send,
    channels_enable,
    notification_retry,
)


@admin.register(AlertRule)
class AlertRuleAdmin(ScopeChoiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "team",
        "metric",
        "scope",
        "window",
        "threshold",
        "level_shown",
        "cooldown",
        "is_enabled",
        "last_value",
        "last_evaluated_at",
        "last_error_short",
    )
    list_filter = ("metric", "window", "level", "is_enabled", team_list_filter("team"))
    list_select_related = ("team",)
    search_fields = ("name", "scope")
    filter_horizontal = ("channels",)
    readonly_fields = (
        "last_value",
        "last_evaluated_at",
        "last_error",
        "next_evaluation_at",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "team", "is_enabled")}),
        ("Condition", {"fields": ("metric", "scope", "confirm_scope", "window", "threshold")}),
        ("Notify", {"fields": ("level", "cooldown", "channels")}),
        (
            "Last evaluation",
            {
                "fields": ("last_value", "last_evaluated_at", "last_error", "next_evaluation_at"),
                "classes": ("collapse",),
            },
        ),
    )

    @admin.display(description="level", ordering="level")
    def level_shown(self, obj: AlertRule) -> str:
        return level_badge(obj.level)

    @admin.display(description="last error")
    def last_error_short(self, obj: AlertRule) -> str:
        return (obj.last_error[:80] + "...") if len(obj.last_error) > 80 else obj.last_error


class NotificationInline(admin.TabularInline):
    model = Notification
    fields = ("kind", "channel", "status", "attempts", "created_at", "sent_at", "last_error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-created_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(TeamScopedAdminMixin, admin.ModelAdmin):
    list_display = (
        "title",
        "level_shown",
        "state",
        "source",
        "scope",
        "last_fired_at",
        "notify_count",
        "acknowledged_at",
        "muted_until",
    )
    list_filter = ("state", "level", "source", team_list_filter("team"))
    search_fields = ("title", "key", "scope")
    list_select_related = ("rule", "budget")
    date_hierarchy = "last_fired_at"
    inlines = (NotificationInline,)
    actions = ("acknowledge", "mute_1h", "mute_24h", "unmute")
    readonly_fields = [f.name for f in Alert._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.method in ("GET", "HEAD") or obj is None

    @admin.display(description="level", ordering="level")
    def level_shown(self, obj: Alert) -> str:
        return forecast_badge(obj.label) if obj.source == AlertSource.FORECAST else level_badge(obj.level)

    @admin.action(description="Acknowledge (no more repeats; the resolve is still sent)")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        done = sum(alert_acknowledge(alert=a, user=request.user) for a in queryset.filter(state=AlertState.FIRING))
        self.message_user(request, f"{done} alert(s) acknowledged.", messages.SUCCESS)

    def _mute(self, request: HttpRequest, queryset: QuerySet[Alert], hours: int | None) -> None:
        until = None if hours is None else timezone.now() + timedelta(hours=hours)
        for alert in queryset:
            alert_mute(alert=alert, until=until)
        text = "unmuted" if until is None else f"muted until {until:%Y-%m-%d %H:%M} UTC"
        self.message_user(request, f"{queryset.count()} alert(s) {text}.", messages.SUCCESS)

    @admin.action(description="Mute for 1 hour")
    def mute_1h(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._mute(request, queryset, 1)

    @admin.action(description="Mute for 24 hours")
    def mute_24h(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._mute(request, queryset, 24)

    @admin.action(description="Unmute")
    def unmute(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._mute(request, queryset, None)


@admin.register(Channel)
class ChannelAdmin(TeamScopedAdminMixin, admin.ModelAdmin):
    # A team's staff see, test and edit their team's channels (their URLs carry tokens); organisation-wide
    # ones are the superusers'.
    list_display = (
        "name",
        "team",
        "kind",
        "min_level",
        "max_per_hour",
        "is_default",
        "receives_reports",
        "is_enabled",
        "disabled_reason",
    )
    list_filter = ("kind", "is_enabled", "min_level", team_list_filter("team"))
    list_select_related = ("team",)
    search_fields = ("name", "target")
    actions = ("send_test", "enable")
    readonly_fields = ("disabled_reason", "created_at", "updated_at")

    @admin.action(description="Send test notification")
    def send_test(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        for channel in queryset:
            channel_test_send(channel=channel)
        self.message_user(
            request,
            f"Test notification queued for {queryset.count()} channel(s); see Notifications for the result.",
            messages.SUCCESS,
        )

    @admin.action(description="Enable again (after fixing the cause)")
    def enable(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        self.message_user(request, f"{channels_enable(channels=queryset)} channel(s) enabled.", messages.SUCCESS)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("started_at", "ok", "permanent", "duration_ms", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeadLetterFilter(admin.SimpleListFilter):
    title = "dead letters"
    parameter_name = "dead"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "failed (dead letters)"), ("waiting", "waiting for a retry")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Notification]) -> QuerySet[Notification]:
        if self.value() == "yes":
            return queryset.filter(status=NotificationStatus.FAILED)
        if self.value() == "waiting":
            return queryset.filter(status=NotificationStatus.PENDING, attempts__gt=0)
        return queryset


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    # A notification belongs to its alert's team; one without an alert (a test, a digest, the report) to
    # its channel's team: organisation-wide channels' are the superusers'.
    list_display = (
        "subject",
        "kind",
        "channel",
        "status_shown",
        "attempts",
        "created_at",
        "next_attempt_at",
        "sent_at",
        "last_error_short",
    )
    # Only the channels of the notifications shown (the plain filter would list every channel's name).
    list_filter = (DeadLetterFilter, "status", "kind", ("channel", admin.RelatedOnlyFieldListFilter))
    search_fields = ("subject", "dedup_key")
    list_select_related = ("channel",)
    date_hierarchy = "created_at"
    inlines = (DeliveryAttemptInline,)
    actions = ("retry",)
    readonly_fields = [f.name for f in Notification._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        queryset = super().get_queryset(request)
        if sees_every_team(request):
            return queryset
        teams = user_teams(request).values("pk")
        return queryset.filter(Q(alert__team__in=teams) | Q(alert__isnull=True, channel__team__in=teams))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.method in ("GET", "HEAD") or obj is None

    @admin.display(description="status", ordering="status")
    def status_shown(self, obj: Notification) -> str:
        colour = {"sent": "#2b8a3e", "failed": "#c92a2a", "folded": "#666"}.get(obj.status, "#e2a300")
        return format_html('<span style="color:{};font-weight:600">{}</span>', colour, obj.get_status_display())

    @admin.display(description="last error")
    def last_error_short(self, obj: Notification) -> str:
        return (obj.last_error[:80] + "...") if len(obj.last_error) > 80 else obj.last_error

    @admin.action(description="Retry (dead letters only)")
    def retry(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        done = sum(notification_retry(notification=n) for n in queryset)
        skipped = queryset.count() - done
        self.message_user(
            request,
            f"{done} notification(s) queued again" + (f"; {skipped} were not dead letters." if skipped else "."),
            messages.SUCCESS if done else messages.WARNING,
        )
