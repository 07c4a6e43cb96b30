"""Budgets in the admin: where every budget stands, its period history and the current burn-down.

Reads here never write: a period not opened yet is shown as it would open (budgets.selectors.budget_statuses);
the beat task and the first write open it for real.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib import admin
from django.db.models import BigIntegerField, ExpressionWrapper, F, QuerySet, Value
from django.db.models.functions import Cast, NullIf
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from core.money import format_money
from core.scopes import SCOPE_KINDS, team_scope
from core.teams import TeamScopedAdminMixin, sees_every_team, team_list_filter, user_teams
from tracking.admin import rollup_scopes_seen_by
from tracking.models import SpendRollup

from .levels import FORECAST_COLOUR, LEVEL_COLOURS, LEVEL_ORDER, OK, level_label
from .models import Budget, BudgetPeriod, Reservation
from .selectors import BudgetStatus, budget_burn_down, budget_statuses, with_spend

EMPTY = "-"
CENTS = Decimal("0.01")


def _money(value: Decimal | None, currency: str) -> str:
    """Amounts in lists to the cent (the change page and the JSON command show them exactly)."""
    return EMPTY if value is None else format_money(value.quantize(CENTS), currency)


def _right(text: str) -> SafeString:
    return format_html('<span style="display:block;text-align:right;font-variant-numeric:tabular-nums">{}</span>', text)


def level_badge(level: str | None) -> SafeString:
    if not level:
        return format_html('<span style="color:{}">{}</span>', LEVEL_COLOURS[None], OK)
    return format_html(
        '<span style="background:{};color:#fff;border-radius:3px;padding:1px 6px;font-weight:600">{}</span>',
        LEVEL_COLOURS[level],
        level_label(level),
    )


def forecast_badge(label: str) -> SafeString:
    return format_html(
        '<span style="border:1px solid {0};color:{0};border-radius:3px;padding:0 4px;font-size:11px">{1}</span>',
        FORECAST_COLOUR,
        label,
    )


def _local(moment: datetime) -> datetime:
    return moment.astimezone(ZoneInfo(settings.TIME_ZONE))


# --- the form: thresholds as "50, 80, 95, 100" ------------------------------------------------


class ThresholdsField(forms.CharField):
    """Percents as comma-separated numbers. Order and range are checked by Budget.clean()."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[int | float] | None:
        text = super().to_python(value)
        if not text:
            return None
        result: list[int | float] = []
        for part in text.replace(";", ",").strip("[] ").split(","):
            part = part.strip().rstrip("%").strip()
            try:
                number = Decimal(part)
            except InvalidOperation:
                raise forms.ValidationError(f"{part!r} is not a number (write percents like 50, 80, 95, 100)") from None
            if not number.is_finite():
                raise forms.ValidationError(f"{part!r} is not a number")
            result.append(int(number) if number == number.to_integral_value() else float(number))
        return result


class BudgetForm(forms.ModelForm):
    thresholds = ThresholdsField(
        label="Thresholds (%)",
        help_text="Percents of the limit at which the budget speaks up, e.g. 50, 80, 95, 100. Each one's level "
        "follows from its value: below 80 info, 80 to 95 warning, 95 to 100 critical, 100 and above exceeded.",
    )

    class Meta:
        model = Budget
        fields = (
            "name",
            "scope",
            "team",
            "owner",
            "is_active",
            "amount",
            "currency",
            "period",
            "hard_limit",
            "thresholds",
            "forecast_alerts",
            "channels",
            "rollover",
            "rollover_cap",
            "metadata",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        scope = self.fields["scope"]
        scope.widget.attrs.update({"list": "budget-scopes", "placeholder": "e.g. provider:openai", "size": 50})


# --- list filters ------------------------------------------------------------------------------


class LevelFilter(admin.SimpleListFilter):
    title = "level"
    parameter_name = "level"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(OK, "ok (below every threshold)"), *[(level, level_label(level)) for level in LEVEL_ORDER]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Budget]) -> QuerySet[Budget]:
        wanted = self.value()
        if not wanted:
            return queryset
        # A level depends on each budget's own thresholds: every active budget's status, read together.
        statuses = budget_statuses(queryset.filter(is_active=True), at=timezone.now())
        return queryset.filter(pk__in=[s.budget.pk for s in statuses if s.level_label == wanted])


class ScopeKindFilter(admin.SimpleListFilter):
    title = "scope kind"
    parameter_name = "scope_kind"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(kind, kind) for kind in SCOPE_KINDS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Budget]) -> QuerySet[Budget]:
        kind = self.value()
        if not kind:
            return queryset
        if kind == "global":
            return queryset.filter(scope="global")
        return queryset.filter(scope__startswith=f"{kind}:")


# --- period history ------------------------------------------------------------------------------


class BudgetPeriodInline(admin.TabularInline):
    model = BudgetPeriod
    verbose_name = "period"
    verbose_name_plural = "period history"
    fields = ("period_range", "limit_shown", "carried_shown", "spent_shown", "utilisation_shown", "peak_shown")
    readonly_fields = fields
    ordering = ("-start",)
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="period")
    def period_range(self, obj: BudgetPeriod) -> str:
        start = _local(obj.start)
        if obj.end is None:
            return f"from {start:%Y-%m-%d} (lifetime)"
        last_day = _local(obj.end) - timedelta(microseconds=1)
        text = f"{start:%Y-%m-%d}" if start.date() == last_day.date() else f"{start:%Y-%m-%d} - {last_day:%Y-%m-%d}"
        return text if obj.closed_at else f"{text} (open)"

    @admin.display(description="limit")
    def limit_shown(self, obj: BudgetPeriod) -> str:
        limit = obj.limit if obj.closed_at else obj.budget.amount + obj.carried_over
        return _money(limit, obj.budget.currency)

    @admin.display(description="carried over")
    def carried_shown(self, obj: BudgetPeriod) -> str:
        return _money(obj.carried_over, obj.budget.currency)

    @admin.display(description="spent")
    def spent_shown(self, obj: BudgetPeriod) -> str:
        if obj.closed_at is None:
            return "(open: see this period above)"
        return _money(obj.spent_at_close, obj.budget.currency)

    @admin.display(description="used")
    def utilisation_shown(self, obj: BudgetPeriod) -> str:
        if obj.closed_at is None or obj.spent_at_close is None or obj.limit <= 0:
            return EMPTY
        return f"{(obj.spent_at_close * 100 / obj.limit).quantize(Decimal('0.1'))} %"

    @admin.display(description="peak level")
    def peak_shown(self, obj: BudgetPeriod) -> SafeString:
        return level_badge(obj.peak_level or None)


# --- the budget admin ----------------------------------------------------------------------------


def _with_status(queryset: QuerySet[Budget], at: datetime) -> QuerySet[Budget]:
    """Each budget's spend this period (budgets.selectors.with_spend) and, for sorting, its utilisation
    in basis points: spent * 10000 / (amount + carried over), in whole micro-units so the product stays
    inside a bigint up to about 900 million spent; a zero limit sorts as empty."""
    nanos = BigIntegerField()
    micro = Value(1000)
    limit = Cast("amount", nanos) + Cast(F("carried"), nanos)
    return with_spend(queryset, at=at).annotate(
        _utilisation_bp=ExpressionWrapper(
            Cast(F("spent"), nanos) / micro * Value(10000) / NullIf(limit / micro, Value(0)), output_field=nanos
        )
    )


@admin.register(Budget)
class BudgetAdmin(TeamScopedAdminMixin, admin.ModelAdmin):
    form = BudgetForm
    list_display = (
        "name",
        "scope",
        "period_shown",
        "spent_shown",
        "limit_shown",
        "remaining_shown",
        "progress",
        "level_shown",
        "forecast_shown",
        "days_left_shown",
        "hard_limit",
        "is_active",
    )
    list_display_links = ("name",)
    list_filter = (LevelFilter, "period", ScopeKindFilter, team_list_filter("team"), "hard_limit", "is_active")
    search_fields = ("name", "scope", "owner__username", "team__name")
    autocomplete_fields = ()
    list_select_related = ("owner", "team")
    list_per_page = 100
    inlines = (BudgetPeriodInline,)
    filter_horizontal = ("channels",)
    readonly_fields = ("this_period", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "scope", "team", "owner", "is_active")}),
        ("Limit", {"fields": ("amount", "currency", "period", "hard_limit")}),
        ("Thresholds and alerts", {"fields": ("thresholds", "forecast_alerts", "channels")}),
        ("Rollover", {"fields": ("rollover", "rollover_cap")}),
        ("Notes", {"fields": ("metadata", "created_at", "updated_at"), "classes": ("collapse",)}),
    )
    change_form_template = "admin/budgets/budget/change_form.html"

    def get_fieldsets(self, request: HttpRequest, obj: Budget | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return (("This period", {"fields": ("this_period",)}), *fieldsets)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        self._now = timezone.now()
        return _with_status(super().get_queryset(request), self._now)

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The change list, with the status and forecast of every active budget on the page read
        together (a few statements) rather than a few per row as each column asks for it."""
        changelist = super().get_changelist_instance(request)
        active = [b for b in changelist.result_list if b.is_active]
        now = getattr(self, "_now", None) or timezone.now()
        for budget, status in zip(active, budget_statuses(active, at=now, forecasts=True), strict=True):
            budget._status_cache = status  # type: ignore[attr-defined]
        return changelist

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        context["scope_suggestions"] = _scope_suggestions(request)
        return super().render_change_form(request, context, *args, **kwargs)

    def _status(self, obj: Budget) -> BudgetStatus | None:
        if not obj.is_active:
            return None
        cached = getattr(obj, "_status_cache", None)
        if cached is None:
            [cached] = budget_statuses([obj], at=getattr(self, "_now", None) or timezone.now(), forecasts=True)
            obj._status_cache = cached  # type: ignore[attr-defined]
        return cached

    @admin.display(description="period", ordering="period")
    def period_shown(self, obj: Budget) -> str:
        return obj.period  # the short name; the form shows the long one

    @admin.display(description="spent")
    def spent_shown(self, obj: Budget) -> str:
        status = self._status(obj)
        return _right(_money(status.spent, obj.currency)) if status else EMPTY

    @admin.display(description="limit")
    def limit_shown(self, obj: Budget) -> str:
        status = self._status(obj)
        if not status:
            return _right(_money(obj.amount, obj.currency))
        text = _money(status.limit, obj.currency)
        if status.period.carried_over:
            text += f" (incl. {_money(status.period.carried_over, obj.currency)} carried)"
        return _right(text)

    @admin.display(description="remaining")
    def remaining_shown(self, obj: Budget) -> str:
        status = self._status(obj)
        return _right(_money(status.remaining, obj.currency)) if status else EMPTY

    @admin.display(description="used", ordering="_utilisation_bp")
    def progress(self, obj: Budget) -> SafeString | str:
        status = self._status(obj)
        if not status:
            return EMPTY
        if status.utilisation is None:
            return "over a zero limit" if status.spent > 0 else EMPTY
        width = min(status.utilisation, Decimal(100))
        return format_html(
            '<div title="{} %" style="width:120px;background:#e8e8e8;border-radius:3px;position:relative;'
            'height:16px"><div class="budget-progress" data-level="{}" style="width:{}%;background:{};height:16px;'
            'border-radius:3px"></div><span style="position:absolute;top:0;left:4px;font-size:11px;line-height:16px;'
            'color:#000">{} %</span></div>',
            status.utilisation,
            status.level_label,
            f"{width:f}",
            LEVEL_COLOURS[status.level],
            status.utilisation.quantize(Decimal("0.1")),
        )

    @admin.display(description="level")
    def level_shown(self, obj: Budget) -> SafeString | str:
        status = self._status(obj)
        return level_badge(status.level) if status else EMPTY

    @admin.display(description="forecast at period end")
    def forecast_shown(self, obj: Budget) -> SafeString | str:
        status = self._status(obj)
        if not status or status.forecast is None:
            return EMPTY
        text = format_html(
            '<span title="{}">{}</span>',
            status.forecast.describe(obj.currency),
            _money(status.forecast.amount, obj.currency),
        )
        if status.forecast_label:
            return format_html("{}<br>{}", text, forecast_badge(status.forecast_label))
        return text

    @admin.display(description="days left")
    def days_left_shown(self, obj: Budget) -> str:
        status = self._status(obj)
        if not status or status.days_left is None:
            return EMPTY
        return str(status.days_left)

    @admin.display(description="this period")
    def this_period(self, obj: Budget) -> SafeString | str:
        if obj.pk is None:
            return EMPTY
        if not obj.is_active:
            return "Inactive: not checked."
        [status] = budget_statuses([obj], at=timezone.now(), forecasts=True)
        currency = obj.currency
        start = _local(status.period.start)
        rows = [
            (
                "period",
                f"{start:%Y-%m-%d %H:%M}"
                + (f" to {_local(status.period.end):%Y-%m-%d %H:%M}" if status.period.end else " (lifetime)")
                + f" {settings.TIME_ZONE}",
            ),
            ("spent", format_money(status.spent, currency)),
            (
                "limit",
                format_money(status.limit, currency)
                + (
                    f" (incl. {format_money(status.period.carried_over, currency)} carried over)"
                    if status.period.carried_over
                    else ""
                ),
            ),
            ("remaining", format_money(status.remaining, currency)),
            ("reserved", format_money(status.reserved, currency)),
            ("used", EMPTY if status.utilisation is None else f"{status.utilisation} %"),
            ("days left", EMPTY if status.days_left is None else str(status.days_left)),
        ]
        if status.forecast is not None:
            rows.append(("forecast at period end", status.forecast.describe(currency)))
        table = format_html_join("", "<tr><th style='padding-right:1em'>{}</th><td>{}</td></tr>", rows)
        forecast = format_html(" {}", forecast_badge(status.forecast_label)) if status.forecast_label else ""
        return format_html(
            "<table>{}<tr><th>level</th><td>{}{}</td></tr></table>{}",
            table,
            level_badge(status.level),
            forecast,
            burn_down_svg(status),
        )


def _scope_suggestions(request: HttpRequest) -> list[str]:
    """Hints for the scope field's datalist, the scopes the user may see: first the whole spend they
    may budget (`global` for a superuser, `team:NAME` for each of a member's teams), then the scopes
    seen in the last 31 days (every one for a superuser, their teams' for a member), at most 300."""
    since = timezone.now() - timedelta(days=31)
    seen = SpendRollup.objects.filter(rollup_scopes_seen_by(request), bucket__gte=since)
    if sees_every_team(request):
        first = ["global"]
    else:
        first = [team_scope(name) for name in user_teams(request).order_by("name").values_list("name", flat=True)]
    scopes = seen.values_list("scope", flat=True).distinct().order_by("scope")[:300]
    return [*first, *(scope for scope in scopes if scope not in first)]


# --- the burn-down chart (inline SVG: no JavaScript, no external assets) ------------------------

_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 640, 220, 70, 16, 12, 28


def burn_down_svg(status: BudgetStatus) -> SafeString | str:
    chart = budget_burn_down(status)
    if chart is None:
        return format_html("<p>{}</p>", "No burn-down for a lifetime budget.")
    span = (chart.end - chart.start).total_seconds()
    values = [v for _, v in chart.points] + [chart.limit, Decimal(0)]
    if chart.forecast_end is not None:
        values.append(chart.forecast_end)
    top, bottom = max(values), min(values)
    if top == bottom:
        top = bottom + 1

    def x(moment: datetime) -> float:
        return _PAD_L + (_W - _PAD_L - _PAD_R) * (moment - chart.start).total_seconds() / span

    def y(value: Decimal) -> float:
        return _PAD_T + (_H - _PAD_T - _PAD_B) * float((top - value) / (top - bottom))

    actual = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in chart.points)
    last_moment, last_value = chart.points[-1]
    parts = [
        f'<svg class="burn-down" role="img" aria-label="burn-down of the current period" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" style="background:#fafafa;border:1px solid #ddd;margin-top:8px">',
        f'<line x1="{_PAD_L}" y1="{y(Decimal(0)):.1f}" x2="{_W - _PAD_R}" y2="{y(Decimal(0)):.1f}" stroke="#999"/>',
        # Ideal: the limit spent evenly to zero at the period's end.
        f'<line class="ideal" x1="{x(chart.start):.1f}" y1="{y(chart.limit):.1f}" x2="{x(chart.end):.1f}" '
        f'y2="{y(Decimal(0)):.1f}" stroke="#aaa" stroke-dasharray="4 3"/>',
        f'<polyline class="actual" fill="none" stroke="{LEVEL_COLOURS[status.level]}" stroke-width="2" '
        f'points="{actual}"/>',
    ]
    if chart.forecast_end is not None:
        parts.append(
            f'<line class="forecast" x1="{x(last_moment):.1f}" y1="{y(last_value):.1f}" x2="{x(chart.end):.1f}" '
            f'y2="{y(chart.forecast_end):.1f}" stroke="{LEVEL_COLOURS[status.level]}" stroke-dasharray="6 4"/>'
        )
    currency = status.currency
    for value in (top, bottom) if bottom < 0 else (top, Decimal(0)):
        parts.append(
            f'<text x="{_PAD_L - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11">'
            f"{_money(value, currency).replace(' ' + currency, '')}</text>"
        )
    first, last = _local(chart.start), _local(chart.end) - timedelta(microseconds=1)
    fmt = "%d %b %H:%M" if chart.step == "hour" else "%d %b"
    parts.append(f'<text x="{_PAD_L}" y="{_H - 8}" font-size="11">{first:{fmt}}</text>')
    parts.append(f'<text x="{_W - _PAD_R}" y="{_H - 8}" font-size="11" text-anchor="end">{last:{fmt}}</text>')
    parts.append(
        f'<text x="{(_PAD_L + _W) / 2:.0f}" y="{_H - 8}" font-size="11" text-anchor="middle">remaining {currency} '
        f"(solid: actual, dashed: even pace and forecast)</text>"
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - built from numbers and dates formatted above


# --- reservations (read-only) --------------------------------------------------------------------


@admin.register(Reservation)
class ReservationAdmin(TeamScopedAdminMixin, admin.ModelAdmin):
    team_path = "budget__team"
    list_display = ("pk", "budget", "amount_shown", "status_shown", "created_at", "expires_at", "actual_shown")
    # Only the budgets this user's reservations hold (the plain filter would list every budget's name).
    list_filter = (("budget", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("budget",)
    date_hierarchy = "created_at"
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="amount")
    def amount_shown(self, obj: Reservation) -> str:
        return format_money(obj.amount, obj.budget.currency)

    @admin.display(description="actual")
    def actual_shown(self, obj: Reservation) -> str:
        return EMPTY if obj.actual is None else format_money(obj.actual, obj.budget.currency)

    @admin.display(description="status")
    def status_shown(self, obj: Reservation) -> str:
        return obj.status
