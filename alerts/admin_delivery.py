"""The admin of the delivery side: channels (where alerts go, a test message) and notifications (the outbox, its
attempts, dead letters, retries), each payload shown as a table. Registered when alerts.admin is imported."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from budgets.admin_display import EMPTY
from budgets.levels import Level, level_label
from core.money import format_money
from core.periods import moment_text
from core.teams import TeamScopedAdminMixin, sees_every_team, team_list_filter, user_teams

from .delivery import channel_test_send, channels_enable, notification_retry
from .models import (
    AlertSource,
    AlertState,
    Channel,
    DeliveryAttempt,
    Notification,
    NotificationKind,
    NotificationStatus,
)

# Payload values that are codes, in the words the screens use for them.
PAYLOAD_CODES: dict[str, Any] = {
    "source": dict(AlertSource.choices),
    "state": dict(AlertState.choices),
    "level": {code: level_label(code) for code in Level.values},
}


@admin.register(Channel)
class ChannelAdmin(TeamScopedAdminMixin, admin.ModelAdmin):
    # A team's staff see, test and edit their team's channels (their URLs carry tokens, so the list never
    # shows a target); organisation-wide ones are the superusers'.
    # At 1440 px beside the navigation and the filters: the kind and the team under the name; the rate
    # limit under the minimum level; the default and daily report roles in one column; why it was
    # disabled under its state.
    list_display = ("name_shown", "sends", "role", "state")
    list_display_links = ("name_shown",)
    list_filter = ("kind", "is_enabled", "min_level", team_list_filter("team"))
    list_select_related = ("team",)
    search_fields = ("name", "target")
    actions = ("send_test", "enable")
    readonly_fields = ("disabled_reason", "created_at", "updated_at")

    class Media:
        css = {"all": ("alerts/admin.css",)}

    @admin.display(description="channel", ordering="name")
    def name_shown(self, obj: Channel) -> str:
        team = f"team {obj.team.name}" if obj.team_id else "organisation-wide"
        return format_html('{}<span class="cc-note">{} · {}</span>', obj.name, obj.get_kind_display(), team)

    @admin.display(description="alerts it takes")
    def sends(self, obj: Channel) -> str:
        """Which alerts go here (by level), and how many an hour before they are folded into a digest."""
        levels = {Level.INFO: "every level", Level.EXCEEDED: "exceeded only"}.get(
            obj.min_level, f"{level_label(obj.min_level)} and above"
        )
        limit = f"at most {obj.max_per_hour:,} an hour, then a digest" if obj.max_per_hour else "no hourly limit"
        return format_html('{}<span class="cc-note">{}</span>', levels, limit)

    @admin.display(description="role")
    def role(self, obj: Channel) -> str:
        roles = [
            text
            for text, on in (("default channel", obj.is_default), ("receives the daily report", obj.receives_reports))
            if on
        ]
        if not roles:
            return EMPTY
        return format_html_join("", '<span class="cc-line">{}</span>', ((text,) for text in roles))

    @admin.display(description="state", ordering="is_enabled")
    def state(self, obj: Channel) -> str:
        if obj.is_enabled:
            return format_html('<span class="cc-on">{}</span>', "enabled")
        reason = (
            format_html('<span class="cc-note cc-two-lines" title="{0}">{0}</span>', obj.disabled_reason)
            if obj.disabled_reason
            else ""
        )
        return format_html('<strong class="cc-off">disabled</strong>{}', reason)

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


PAYLOAD_WORDS = {
    "alert": "alert",
    "id": "alert number",
    "key": "dedup key",
    "source": "raised by",
    "scope": "scope",
    "level": "level",
    "label": "shown as",
    "state": "state",
    "value": "value",
    "threshold": "threshold",
    "currency": "currency",
    "url": "link",
    "digest": "notifications in this digest",
    "subject": "subject",
    "text": "text",
    "test": "test",
}


PAYLOAD_ROWS = 20  # of a list, shown; the rest is counted


def _payload_value(key: str, value: Any, siblings: Mapping[str, Any]) -> Any:
    if isinstance(value, Mapping):
        return payload_table(value)
    if isinstance(value, list):
        if all(not isinstance(item, Mapping | list) for item in value):
            return ", ".join(map(str, value)) or EMPTY
        shown = format_html_join("", "<li>{}</li>", ((payload_table(item),) for item in value[:PAYLOAD_ROWS]))
        more = f"and {len(value) - PAYLOAD_ROWS} more" if len(value) > PAYLOAD_ROWS else ""
        return format_html('<ol class="cc-payload-list">{}</ol>{}', shown, more)
    if value is None or value == "":
        return EMPTY
    if key in ("value", "threshold"):
        try:
            number = Decimal(str(value))
        except (InvalidOperation, ValueError):
            return str(value)
        if siblings.get("currency"):
            return format_money(number, str(siblings["currency"]))
        return f"{number.normalize():,f}"  # a count: 558,378
    if key == "url" and isinstance(value, str) and value.startswith(("http://", "https://")):
        return format_html('<a href="{0}">{0}</a>', value)
    return PAYLOAD_CODES.get(key, {}).get(value, str(value))


def payload_table(payload: Mapping[str, Any]) -> str:
    """A notification's JSON payload as a table with words for its names and codes (nested objects as
    nested tables): what the receiver got, for a person to read."""
    if not payload:
        return EMPTY
    rows = (
        (PAYLOAD_WORDS.get(key, str(key).replace("_", " ")), _payload_value(key, value, payload))
        for key, value in payload.items()
        if not (key == "currency" and {"value", "threshold"} & set(payload))  # shown with the amounts
    )
    return format_html(
        '<table class="cc-payload">{}</table>', format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
    )


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    # A notification belongs to its alert's team; one without an alert (a test, a digest, the report) to
    # its channel's team: organisation-wide channels' are the superusers'.
    # At 1440 px beside the navigation and the filters: attempts and the time it went out are in the
    # status column; the subject and the last error wrap to two lines.
    list_display = (
        "subject_shown",
        "kind",
        "channel_shown",
        "status_shown",
        "created",
        "next_attempt",
        "last_error_short",
    )
    list_display_links = ("subject_shown",)
    # Only the channels of the notifications shown (the plain filter would list every channel's name).
    list_filter = (DeadLetterFilter, "status", "kind", ("channel", admin.RelatedOnlyFieldListFilter))
    search_fields = ("subject", "dedup_key")
    list_select_related = ("channel",)
    date_hierarchy = "created_at"
    inlines = (DeliveryAttemptInline,)
    actions = ("retry",)
    fieldsets = (
        (None, {"fields": ("subject", "kind", "level_words", "channel", "alert_link", "status_shown")}),
        ("Delivery", {"fields": ("attempts", "created_at", "next_attempt_at", "sent_at", "last_error", "digest")}),
        ("What was sent", {"fields": ("text", "payload_shown")}),
        ("Advanced", {"classes": ("collapse",), "fields": ("dedup_key", "claimed_until", "claimed_by")}),
    )
    readonly_fields = (
        "subject",
        "kind",
        "level_words",
        "channel",
        "alert_link",
        "status_shown",
        "attempts",
        "created_at",
        "next_attempt_at",
        "sent_at",
        "last_error",
        "digest",
        "text",
        "payload_shown",
        "dedup_key",
        "claimed_until",
        "claimed_by",
    )

    class Media:
        css = {"all": ("alerts/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        queryset = super().get_queryset(request)
        if sees_every_team(request):
            return queryset
        teams = user_teams(request).values("pk")
        return queryset.filter(Q(alert__team__in=teams) | Q(alert__isnull=True, channel__team__in=teams))

    # The outbox is the record of what was said to whom: viewed and retried, never added, edited or deleted.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # read-only pages; retrying a dead letter is the list's action

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="subject", ordering="subject")
    def subject_shown(self, obj: Notification) -> str:
        return format_html('<span class="cc-two-lines" title="{0}">{0}</span>', obj.subject)

    @admin.display(description="status", ordering="status")
    def status_shown(self, obj: Notification) -> str:
        colour = {"sent": "#2b8a3e", "failed": "#c92a2a", "folded": "#666"}.get(obj.status, "#e2a300")
        lines = [format_html('<span style="color:{};font-weight:600">{}</span>', colour, obj.get_status_display())]
        if obj.sent_at is not None:
            lines.append(format_html('<span class="cc-quiet">{}</span>', moment_text(obj.sent_at)))
        if obj.attempts != 1 or obj.status != NotificationStatus.SENT:
            lines.append(
                format_html('<span class="cc-quiet">{} attempt{}</span>', obj.attempts, pluralize(obj.attempts))
            )
        return format_html_join("", '<span class="cc-line">{}</span>', ((line,) for line in lines))

    # The channel's name and the moment wrap where they must (the admin keeps a relation's and a date
    # field's own column on one line).
    @admin.display(description="channel", ordering="channel__name")
    def channel_shown(self, obj: Notification) -> str:
        return obj.channel.name

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Notification) -> str:
        return moment_text(obj.created_at)

    @admin.display(description="next attempt", ordering="next_attempt_at")
    def next_attempt(self, obj: Notification) -> str:
        """Only while one is due: a sent or failed notification has no next attempt."""
        if obj.status not in (NotificationStatus.PENDING, NotificationStatus.SENDING):
            return EMPTY
        return moment_text(obj.next_attempt_at)

    @admin.display(description="last error")
    def last_error_short(self, obj: Notification) -> str:
        if not obj.last_error:
            return EMPTY
        return format_html('<span class="cc-two-lines" title="{0}">{0}</span>', obj.last_error)

    @admin.display(description="level")
    def level_words(self, obj: Notification) -> str:
        return level_label(obj.level) if obj.level else EMPTY

    @admin.display(description="alert")
    def alert_link(self, obj: Notification) -> str:
        if obj.alert_id is None:
            return EMPTY
        return format_html('<a href="{}">{}</a>', reverse("admin:alerts_alert_change", args=[obj.alert_id]), obj.alert)

    @admin.display(description="payload")
    def payload_shown(self, obj: Notification) -> str:
        report = obj.payload.get("report") if isinstance(obj.payload, Mapping) else None
        if obj.kind == NotificationKind.REPORT and isinstance(report, Mapping):
            # The whole report's figures: the preview shows them as the email does.
            day = str(report.get("day", ""))
            return format_html(
                'The daily report for {}: <a href="{}?{}">see it as the email shows it</a>.',
                day,
                reverse("admin:alerts_daily_report"),
                urlencode({"day": day}),
            )
        return payload_table(obj.payload)

    @admin.action(description="Retry (dead letters only)")
    def retry(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        done = sum(notification_retry(notification=n) for n in queryset)
        skipped = queryset.count() - done
        self.message_user(
            request,
            f"{done} notification(s) queued again" + (f"; {skipped} were not dead letters." if skipped else "."),
            messages.SUCCESS if done else messages.WARNING,
        )
