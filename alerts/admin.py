"""Alerts in the admin: rules; incidents (acknowledge, mute, resolve: from the list or the alert's own
page; who was told; links to what raised it and the cost entries that drove it); channels (send a
test); the outbox with every delivery attempt, and the dead letters (retry); the daily report's
preview. Actions and buttons call services and report. Alerts and notifications are history: never
deleted here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from budgets.admin import ScopeChoiceAdminMixin, level_badge
from budgets.admin_display import EMPTY
from budgets.admin_page import forecast_badge
from core.models import Team
from core.money import format_money
from core.periods import moment_text
from core.scopes import scope_inner, scope_team
from core.teams import TeamScopedAdminMixin, sees_every_team, team_list_filter
from tracking.models import Outcome, PricingStatus

from .models import (
    Alert,
    AlertRule,
    AlertSource,
    AlertState,
    Channel,
    Metric,
    Notification,
    Window,
)
from .report_email import daily_report_html, daily_report_subject, daily_report_text
from .reports import daily_report_build, report_day_default
from .selectors import (
    NOBODY_TOLD,
    alert_period_end,
    alert_receivers,
    alert_window,
    alerts_unheard,
    delivery_words,
    with_delivery,
)
from .services import alert_acknowledge, alert_mute, alert_resolve


class PlainDecimalField(forms.DecimalField):
    """A number as a person writes it, 40 or 0.005, not as stored (40.000000000, 0E-9)."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, Decimal) and value.is_finite():
            return f"{value.normalize():f}"
        return value


THRESHOLD_HELP = (
    "Fires when the value is above this. In what the metric measures: USD for spend, GPU cost and cost per "
    "lead; a percent for the error rate and the rise of cost per lead (10 for 10 %); a count for tokens, "
    "rate-limit hits and unpriced events; the score for anomalies (how many spreads above the usual)."
)


@admin.register(AlertRule)
class AlertRuleAdmin(ScopeChoiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    # At 1440 px beside the navigation and the filters: the team and whether it is off under the name;
    # the condition in words (its metric, scope, window and threshold); when it was last checked and
    # its last error under the last value; the cooldown under the level.
    list_display = ("name_shown", "condition", "last_value_shown", "level_shown")
    list_display_links = ("name_shown",)
    list_filter = ("metric", "window", "level", "is_enabled", team_list_filter("team"))
    list_select_related = ("team",)
    search_fields = ("name", "scope")
    filter_horizontal = ("channels",)
    readonly_fields = (
        "last_value_shown",
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
                "fields": ("last_value_shown", "last_evaluated_at", "last_error", "next_evaluation_at"),
                "classes": ("collapse",),
            },
        ),
    )

    class Media:
        css = {"all": ("alerts/admin.css",)}

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "threshold":
            kwargs.update(form_class=PlainDecimalField, help_text=THRESHOLD_HELP)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="rule", ordering="name")
    def name_shown(self, obj: AlertRule) -> str:
        """Its team (none: organisation-wide), and whether it is switched off."""
        notes = []
        if obj.team_id:
            notes.append(format_html("team {}", obj.team.name))
        if not obj.is_enabled:
            notes.append(format_html('<strong class="cc-off">{}</strong>', "disabled"))
        if not notes:
            return obj.name
        return format_html(
            '{}<span class="cc-note">{}</span>', obj.name, format_html_join(" · ", "{}", ((n,) for n in notes))
        )

    @admin.display(description="fires when", ordering="metric")
    def condition(self, obj: AlertRule) -> str:
        return obj.describe()

    @admin.display(description="last value", ordering="last_value")
    def last_value_shown(self, obj: AlertRule) -> str:
        """The value of the last check, when that was, and why it failed if it did."""
        if obj.last_evaluated_at is None:
            value, when = "not checked yet", ""
        else:
            value = obj.figure(obj.last_value) if obj.last_value is not None else "no data"
            when = f"checked {moment_text(obj.last_evaluated_at)}"
        lines = [format_html('<span class="cc-num">{}</span>', value)]
        if when:
            lines.append(format_html('<span class="cc-quiet">{}</span>', when))
        if obj.last_error:
            lines.append(format_html('<span class="cc-error cc-two-lines" title="{0}">{0}</span>', obj.last_error))
        return format_html_join("", '<span class="cc-line">{}</span>', ((line,) for line in lines))

    @admin.display(description="level", ordering="level")
    def level_shown(self, obj: AlertRule) -> str:
        return format_html('{}<span class="cc-note">{}</span>', level_badge(obj.level), cooldown_words(obj.cooldown))


def cooldown_words(cooldown: timedelta) -> str:
    """How often a rule's alert reminds its channels while it stays firing: "reminder every 1 hour"."""
    seconds = int(cooldown.total_seconds())
    if seconds <= 0:
        return "reminder at every check"
    parts = []
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if count := seconds // size:
            parts.append(f"{count} {unit}{pluralize(count)}")
            seconds -= count * size
    return "reminder every " + " ".join(parts)


class NotificationInline(admin.TabularInline):
    model = Notification
    fields = ("notification", "kind", "channel", "status", "attempts", "created_at", "sent_at", "last_error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-created_at",)
    verbose_name_plural = "notifications of this alert"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="subject")
    def notification(self, obj: Notification) -> str:
        url = reverse("admin:alerts_notification_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.subject)


class AcknowledgedFilter(admin.SimpleListFilter):
    title = "acknowledged"
    parameter_name = "acknowledged"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "not yet (firing, nobody on it)"), ("yes", "acknowledged")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Alert]) -> QuerySet[Alert]:
        if self.value() == "no":
            return queryset.filter(state=AlertState.FIRING, acknowledged_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(acknowledged_at__isnull=False)
        return queryset


class HeardFilter(admin.SimpleListFilter):
    """Who hears about an alert: the banner's "open alerts with nowhere to go" links here."""

    title = "who hears it"
    parameter_name = "heard"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("nowhere", "open, and no channel would take it"), ("nobody", NOBODY_TOLD)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Alert]) -> QuerySet[Alert]:
        if self.value() == "nowhere":
            return queryset.filter(pk__in=[alert.pk for alert in alerts_unheard(queryset)])
        if self.value() == "nobody":
            return queryset.exclude(Exists(Notification.objects.filter(alert=OuterRef("pk"))))
        return queryset


def _figure(value: Decimal | None, alert: Alert, *, exact: bool = False) -> str:
    """An alert's value or threshold as a person reads it: a rule's by what its metric measures (as the
    rule list shows it), a budget's money with its currency. `exact`: a threshold as set."""
    if value is None:
        return EMPTY
    if alert.rule_id is not None:
        return alert.rule.figure(value, exact=exact)
    if alert.currency:  # a budget's spend to the cent (13.24 USD); its limit as set
        return format_money(
            value if exact else value.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN), alert.currency
        )
    return f"{value.normalize():,f}"


# The scope kinds the cost entry change list (tracking.admin.CostEntryAdmin) filters by, each by a query
# parameter of its own name: its provider filter, and exact matches on the entry's own columns.
ENTRY_FILTERS = ("provider", "model", "service", "subject", "job", "operation")


def cost_entries_url(alert: Alert) -> tuple[str, str] | None:
    """(URL, words) of the cost entries that drove the alert: its scope in its period or window, on the
    cost entry change list (team-scoped as every change list is). None where no time window applies."""
    window = alert_window(alert)
    if window is None:
        return None
    start, end = window
    params: dict[str, str] = {"occurred_at__gte": start.isoformat()}
    if end is not None:
        params["occurred_at__lt"] = end.isoformat()
    if (team_name := scope_team(alert.scope)) is not None:
        team = Team.objects.filter(name=team_name).values_list("pk", flat=True).first()
        params["team"] = str(team) if team is not None else "0"  # a team since renamed: none of its entries
    inner = scope_inner(alert.scope)
    kind, _, value = inner.partition(":")
    if alert.rule_id is not None and alert.rule.metric == Metric.GPU_COST and inner == "global":
        kind, value = "provider", "gpu"  # as the rule reads it (alerts.evaluation._rollup_scope)
    untold = ""
    if kind in ENTRY_FILTERS:
        params[kind] = value
    elif kind == "tag":
        untold = f" (all of them: the list does not filter by the tag {value})"
    if alert.rule_id is not None:
        extra = {
            Metric.ERROR_RATE: ("outcome__exact", Outcome.ERROR),
            Metric.RATE_LIMITED: ("outcome__exact", Outcome.RATE_LIMITED),
            Metric.UNPRICED: ("pricing_status__exact", PricingStatus.UNPRICED),
        }.get(alert.rule.metric)
        if extra is not None:
            params[extra[0]] = extra[1]
    until = "now" if end is None else moment_text(end)
    words = f"Cost entries of {alert.scope} from {moment_text(start)} to {until}{untold}"
    return reverse("admin:tracking_costentry_changelist") + "?" + urlencode(params), words


@dataclass(frozen=True)
class Verb:
    """Something a person does to alerts: from the list (an action) or the alert's page (a button)."""

    label: str
    help: str


VERBS = {
    "acknowledge": Verb(
        "Acknowledge", "Someone is on it: no more reminders; its channels still hear when it resolves."
    ),
    "mute_1h": Verb("Mute for 1 hour", "Send nothing about it for an hour."),
    "mute_24h": Verb("Mute for 1 day", "Send nothing about it for 24 hours."),
    "mute_period": Verb(
        "Mute until the period ends", "Send nothing about it until its budget period, hour, day or month ends."
    ),
    "unmute": Verb("Unmute", "Send its notifications again."),
    "resolve": Verb(
        "Resolve",
        "Close it now and tell its channels (if they heard it fire). If the condition still holds, the next "
        "check opens it again.",
    ),
}
MUTE_FOR = {"mute_1h": timedelta(hours=1), "mute_24h": timedelta(days=1)}


@admin.register(Alert)
class AlertAdmin(TeamScopedAdminMixin, admin.ModelAdmin):
    # At 1440 px beside the navigation and the filters: the title on two lines; state, acknowledged and
    # muted in one column; the scope is on the alert's page (and searched).
    list_display = ("title_shown", "level_shown", "state_shown", "told", "fired")
    list_display_links = ("title_shown",)
    list_filter = ("state", AcknowledgedFilter, HeardFilter, "level", "source", team_list_filter("team"))
    search_fields = ("title", "key", "scope")
    list_select_related = ("rule", "budget", "acknowledged_by")
    date_hierarchy = "last_fired_at"
    inlines = (NotificationInline,)
    actions = ("acknowledge", "mute_1h", "mute_24h", "mute_period", "unmute", "resolve")
    fieldsets = (
        (None, {"fields": ("title", "level_shown", "state", "message", "about", "scope", "team", "figures")}),
        ("What drove it", {"fields": ("cost_entries", "first_fired_at", "last_fired_at", "resolved_at")}),
        (
            "Who was told",
            {"fields": ("told", "hears_now", "acknowledged", "muted", "next_reminder", "notify_count")},
        ),
        ("Advanced", {"classes": ("collapse",), "fields": ("key", "source")}),
    )
    readonly_fields = (
        "title",
        "level_shown",
        "state",
        "message",
        "about",
        "scope",
        "team",
        "figures",
        "cost_entries",
        "first_fired_at",
        "last_fired_at",
        "resolved_at",
        "told",
        "hears_now",
        "acknowledged",
        "muted",
        "next_reminder",
        "notify_count",
        "key",
        "source",
    )

    class Media:
        css = {"all": ("alerts/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alert]:
        return with_delivery(super().get_queryset(request))

    def get_urls(self) -> list[Any]:
        preview = path("daily-report/", self.admin_site.admin_view(self.daily_report_view), name="alerts_daily_report")
        return [preview, *super().get_urls()]

    # Alerts are raised by evaluation and kept as history: nobody adds, edits or deletes them here.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # its page is read-only (no Save button); what a person may do are its buttons

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_act_permission(self, request: HttpRequest) -> bool:
        """Acknowledging, muting and resolving change the alert: the model's change permission as
        granted to the user (has_change_permission above only makes the page read-only)."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    # --- columns and fields --------------------------------------------------------------------

    @admin.display(description="alert", ordering="title")
    def title_shown(self, obj: Alert) -> str:
        return format_html('<span class="cc-two-lines" title="{0}">{0}</span>', obj.title)

    @admin.display(description="level", ordering="level")
    def level_shown(self, obj: Alert) -> str:
        return forecast_badge(obj.label) if obj.source == AlertSource.FORECAST else level_badge(obj.level)

    @admin.display(description="notifications")
    def told(self, obj: Alert) -> str:
        words = delivery_words(obj)
        if words == NOBODY_TOLD:
            return format_html('<span class="cc-untold">{}</span>', words)
        return words

    @admin.display(description="fired", ordering="last_fired_at")
    def fired(self, obj: Alert) -> str:
        """When it fired (this time), wrapping where it must (the admin keeps a date field on one line)."""
        return moment_text(obj.last_fired_at)

    @admin.display(description="state", ordering="state")
    def state_shown(self, obj: Alert) -> str:
        """Firing or resolved, and whether someone is on it and whether it is muted."""
        lines = [format_html("<strong>{}</strong>", obj.get_state_display())]
        if obj.acknowledged_at is not None:
            who = obj.acknowledged_by.get_username() if obj.acknowledged_by else "someone"
            lines.append(format_html('<span class="cc-quiet">acknowledged by {}</span>', who))
        if obj.is_muted:
            lines.append(format_html('<span class="cc-quiet">{}</span>', self.muted(obj)))
        return format_html_join("", '<span class="cc-line">{}</span>', ((line,) for line in lines))

    @admin.display(description="acknowledged", ordering="acknowledged_at")
    def acknowledged(self, obj: Alert) -> str:
        if obj.acknowledged_at is None:
            return "not yet"
        who = obj.acknowledged_by.get_username() if obj.acknowledged_by else "someone"
        return f"acknowledged by {who}, {moment_text(obj.acknowledged_at)}"

    @admin.display(description="muted", ordering="muted_until")
    def muted(self, obj: Alert) -> str:
        return f"muted until {moment_text(obj.muted_until)}" if obj.is_muted and obj.muted_until else "no"

    @admin.display(description="next reminder")
    def next_reminder(self, obj: Alert) -> str:
        """When its channels hear again that it is still firing, if they will."""
        if obj.state != AlertState.FIRING:
            return "none: it is resolved"
        if obj.acknowledged_at is not None:
            return "none: acknowledged"
        if obj.next_notify_at is None:
            return "none: announced once" + (" per budget period" if obj.budget_id is not None else "")
        if obj.is_muted:
            return f"{moment_text(obj.next_notify_at)} if it is still firing, once the mute ends"
        return f"{moment_text(obj.next_notify_at)} if it is still firing"

    @admin.display(description="raised by")
    def about(self, obj: Alert) -> str:
        if obj.budget_id is not None:
            url = reverse("admin:budgets_budget_change", args=[obj.budget_id])
            return format_html('budget <a href="{}">{}</a>', url, obj.budget.name)
        if obj.rule_id is not None:
            url = reverse("admin:alerts_alertrule_change", args=[obj.rule_id])
            return format_html('rule <a href="{}">{}</a> ({})', url, obj.rule.name, obj.rule.describe())
        return obj.get_source_display()

    @admin.display(description="value")
    def figures(self, obj: Alert) -> str:
        against = "limit" if obj.budget_id is not None else "threshold"
        return f"{_figure(obj.value, obj)} ({against} {_figure(obj.threshold, obj, exact=True)})"

    @admin.display(description="cost entries")
    def cost_entries(self, obj: Alert) -> str:
        link = cost_entries_url(obj)
        if link is not None:
            return format_html('<a href="{}">{}</a>', *link)
        if obj.rule_id is not None and obj.rule.window == Window.LAST_BATCH:
            return format_html(
                'This rule reads the last closed batch: see the <a href="{}">batches</a>.',
                reverse("admin:tracking_batch_changelist"),
            )
        return EMPTY

    @admin.display(description="who hears it now")
    def hears_now(self, obj: Alert) -> str:
        receivers = alert_receivers(obj)
        if receivers:
            return ", ".join(str(channel) for channel in receivers)
        return format_html(
            '<span class="cc-untold">nobody: no enabled channel takes this alert.</span> <a href="{}">Add a channel</a>',
            reverse("admin:alerts_channel_add"),
        )

    # --- acknowledge, mute, resolve: one way each, from the list or from the alert's page ---------

    def _act(self, request: HttpRequest, alerts: Iterable[Alert], verb: str) -> None:
        alerts = list(alerts)
        now = timezone.now()
        done: list[Alert] = []
        untils: set[datetime] = set()
        for alert in alerts:
            if verb == "acknowledge":
                ok = alert_acknowledge(alert=alert, user=request.user, now=now)
            elif verb == "resolve":
                ok = alert_resolve(key=alert.key, now=now) is not None
            elif verb == "unmute":
                alert_mute(alert=alert, until=None)
                ok = True
            else:
                until = now + MUTE_FOR[verb] if verb in MUTE_FOR else alert_period_end(alert, now=now)
                ok = until is not None
                if until is not None:
                    alert_mute(alert=alert, until=until)
                    untils.add(until)
            if ok:
                done.append(alert)
                self.log_change(request, alert, VERBS[verb].label)
        skipped = len(alerts) - len(done)
        if verb == "acknowledge":
            text = f"{len(done)} alert(s) acknowledged."
            why = "already acknowledged or not firing"
        elif verb == "resolve":
            text = f"{len(done)} alert(s) resolved."
            why = "not firing"
        elif verb == "unmute":
            text = f"{len(done)} alert(s) unmuted."
            why = ""
        else:
            when = f"until {moment_text(untils.pop())}" if len(untils) == 1 else "until their periods end"
            text = f"{len(done)} alert(s) muted {when}."
            why = "no period still running"
        if skipped and why:
            text += f" {skipped} skipped: {why}."
        self.message_user(request, text, messages.SUCCESS if done else messages.WARNING)

    @admin.action(description=VERBS["acknowledge"].label, permissions=["act"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._act(request, queryset, "acknowledge")

    @admin.action(description=VERBS["mute_1h"].label, permissions=["act"])
    def mute_1h(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._act(request, queryset, "mute_1h")

    @admin.action(description=VERBS["mute_24h"].label, permissions=["act"])
    def mute_24h(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._act(request, queryset, "mute_24h")

    @admin.action(description=VERBS["mute_period"].label, permissions=["act"])
    def mute_period(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._act(request, queryset.select_related("rule", "budget_period"), "mute_period")

    @admin.action(description=VERBS["unmute"].label, permissions=["act"])
    def unmute(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._act(request, queryset, "unmute")

    @admin.action(description=VERBS["resolve"].label, permissions=["act"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._act(request, queryset, "resolve")

    def buttons(self, request: HttpRequest, alert: Alert) -> list[dict[str, str]]:
        """The verbs that apply to this alert now, as the buttons of its page."""
        if not self.has_act_permission(request):
            return []
        verbs: list[str] = []
        if alert.state == AlertState.FIRING:
            if alert.acknowledged_at is None:
                verbs.append("acknowledge")
            verbs += ["mute_1h", "mute_24h"]
            if alert_period_end(alert) is not None:
                verbs.append("mute_period")
        if alert.is_muted:
            verbs.append("unmute")
        if alert.state == AlertState.FIRING:
            verbs.append("resolve")
        return [{"verb": verb, "label": VERBS[verb].label, "help": VERBS[verb].help} for verb in verbs]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST" and "_alert" in request.POST:
            return self._button_pressed(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def _button_pressed(self, request: HttpRequest, object_id: str) -> HttpResponse:
        alert = self.get_object(request, unquote(object_id))
        if alert is None:  # another team's, or gone: as the admin answers for any missing object
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_act_permission(request):
            raise PermissionDenied
        verb = request.POST["_alert"]
        if verb not in VERBS:
            return HttpResponseBadRequest(f"_alert: {verb!r} is not something an alert can do ({', '.join(VERBS)})")
        self._act(request, [alert], verb)
        return HttpResponseRedirect(request.get_full_path())

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Alert | None = None,
    ) -> HttpResponse:
        context["alert_buttons"] = [] if obj is None else self.buttons(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"daily_report_url": reverse("admin:alerts_daily_report") if sees_every_team(request) else ""}
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    # --- the daily report, as the email shows it --------------------------------------------------

    def daily_report_view(self, request: HttpRequest) -> HttpResponse:
        """The daily report of any day, with the email's own subject, HTML and text. It sums every
        team's spend, so it is the superusers' (as the channels that receive it are organisation-wide)."""
        if not (sees_every_team(request) and self.has_view_permission(request)):
            raise PermissionDenied
        today = timezone.localdate()
        raw = request.GET.get("day", "").strip()
        error = ""
        day = report_day_default()
        if raw:
            try:
                day = date.fromisoformat(raw)
            except ValueError:
                error = f"day: {raw!r} is not a date; write it as YYYY-MM-DD (e.g. {day.isoformat()})."
            else:
                if day > today:
                    error = f"day: {day.isoformat()} has not begun yet; choose today ({today.isoformat()}) or earlier."
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Daily report preview",
            "subtitle": None,
            "opts": self.opts,
            "day": day,
            "today": today,
            "error": error,
        }
        if error:
            return TemplateResponse(request, "admin/alerts/daily_report.html", context, status=400)
        report = daily_report_build(day=day)
        context.update(
            {
                "subject": daily_report_subject(report),
                "html": daily_report_html(report),
                "text": daily_report_text(report),
                "previous_day": day - timedelta(days=1),
                "next_day": day + timedelta(days=1) if day < today else None,
                "receivers": list(Channel.objects.filter(receives_reports=True, is_enabled=True).order_by("name")),
            }
        )
        return TemplateResponse(request, "admin/alerts/daily_report.html", context)


# --- payloads as tables ------------------------------------------------------------------------------


# The delivery side (channels, notifications) registers its admin pages.
from . import admin_delivery  # noqa: E402, F401
