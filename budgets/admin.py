"""Budgets in the admin: where every budget stands, the current period's burn-down, the period history.

Reads here never write: a period not opened yet is shown as it would open (budgets.selectors.budget_statuses);
the beat task and the first write open it for real. The charts are drawn in the browser by the vendored
Chart.js (budgets/static/budgets/budget.js) from data the page carries (json_script), built here from the
same status the tables beside them show. A template (subject:*) and its values: budgets.admin_templates.
"""

from __future__ import annotations

import difflib
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import BigIntegerField, ExpressionWrapper, F, QuerySet, Value
from django.db.models.functions import Cast, NullIf
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from budgets.admin_page import budget_page, forecast_badge
from core.models import Team
from core.money import format_money_fine
from core.scopes import (
    SCOPE_KINDS,
    scope_errors,
    scope_is_template,
    team_scope,
    team_scope_errors,
    template_scope_errors,
)
from core.teams import TeamScopedAdminMixin, sees_every_team, team_list_filter, user_teams
from tracking.admin import rollup_scopes_seen_by
from tracking.models import SpendRollup

from .admin_display import EMPTY, level_badge, money, plain_amount
from .admin_templates import (
    TemplateAdminMixin,
    template_each,
    template_page,
    template_row_note,
    template_scope_known,
    template_scope_suggestions,
    value_counts,
    value_of,
)
from .levels import LEVEL_COLOURS, LEVEL_ORDER, OK, level_label
from .models import Budget, Reservation, default_thresholds
from .selectors import BudgetStatus, budget_statuses, with_spend


def _money_fine(value: Decimal | None, currency: str) -> str:
    """One call's amount (a reservation): cents, or up to 6 places where it needs them (0.0042 USD)."""
    return EMPTY if value is None else format_money_fine(value, currency)


def _right(text: str) -> SafeString:
    return format_html('<span class="cc-num">{}</span>', text)


# --- scopes: chosen from those that exist, a never-seen one confirmed ---------------------------------

_SUGGESTIONS_DAYS = 31
_SUGGESTIONS_MAX = 300


def scope_suggestions(request: HttpRequest) -> list[str]:
    """The scopes a user may choose (the scope field's suggestions): first the whole spend they may
    watch (`global` and every team's `team:NAME` for a superuser, `team:NAME` for each of a member's
    teams), then the scopes with spend in the last 31 days (every one for a superuser, their teams' for
    a member), at most 300. Read once per request."""
    cached = getattr(request, "_scope_suggestions", None)
    if cached is not None:
        return cached
    since = timezone.now() - timedelta(days=_SUGGESTIONS_DAYS)
    seen = SpendRollup.objects.filter(rollup_scopes_seen_by(request), bucket__gte=since)
    teams = (Team.objects.all() if sees_every_team(request) else user_teams(request)).order_by("name")
    first = [team_scope(name) for name in teams.values_list("name", flat=True)]
    if sees_every_team(request):
        first.insert(0, "global")
    scopes = seen.values_list("scope", flat=True).distinct().order_by("scope")[:_SUGGESTIONS_MAX]
    # Rollups also count operations (for the daily report); budgets and rules cannot watch those.
    found = [*first, *(scope for scope in scopes if scope not in first and not scope_errors(scope))]
    request._scope_suggestions = found  # type: ignore[attr-defined]
    return found


def scope_known(request: HttpRequest, scope: str) -> bool:
    """Whether `scope` is one the user may watch that exists: a whole spend they may choose, or a scope
    with spend recorded at any time (among the scopes they may read)."""
    if scope in scope_suggestions(request):
        return True
    return SpendRollup.objects.filter(rollup_scopes_seen_by(request), scope=scope).exists()


class ScopeInput(forms.TextInput):
    """A text box suggesting the scopes that exist (a datalist), with a note shown while the typed
    scope is none of them (budgets/static/budgets/scope.js)."""

    class Media:
        js = ("budgets/scope.js",)

    def __init__(self, suggestions: list[str], attrs: dict[str, Any] | None = None) -> None:
        super().__init__({"placeholder": "e.g. provider:openai", "size": 50, "autocomplete": "off", **(attrs or {})})
        self.suggestions = suggestions

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        attrs = dict(attrs or {})
        datalist = f"{attrs.get('id') or 'id_' + name}-suggestions"
        attrs.update({"list": datalist, "data-scope-input": "1"})
        return format_html(
            '{}<datalist id="{}">{}</datalist><p class="cc-scope-note" hidden>{}</p>',
            super().render(name, value, attrs, renderer),
            datalist,
            format_html_join("", '<option value="{}">', ((s,) for s in self.suggestions)),
            "None of the scopes with recent spend: check the spelling. "
            "Saving a scope that never had spend asks you to confirm it.",
        )


class ScopeConfirmForm(forms.ModelForm):
    """A form with a scope: a scope that no spend has ever counted towards (a typo such as
    provider:antropic) is refused once with a warning, and a "save anyway" box appears beside it;
    ticked, the form saves. The admin sets `scope_request` (ScopeChoiceAdminMixin). A form that
    accepts templates (`templates_allowed`: budgets) takes `subject:*` as having spend when any scope
    it covers has (budgets.admin_templates.template_scope_known)."""

    scope_request: HttpRequest | None = None
    templates_allowed = False

    confirm_scope = forms.BooleanField(
        label="Save with this scope anyway",
        required=False,
        widget=forms.HiddenInput,
        help_text="No spend has been recorded for this scope yet. Tick to keep it all the same, "
        "e.g. for a service that has not started spending.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        scope = cleaned.get("scope")
        if not scope or self.scope_request is None or "scope" in self.errors:
            return cleaned
        if self.instance.pk is not None and "scope" not in self.changed_data:
            return cleaned  # confirmed when it was chosen
        team = cleaned.get("team")
        template = self.templates_allowed and scope_is_template(scope)
        problems = template_scope_errors(scope) if template else scope_errors(scope)
        if problems or team_scope_errors(scope, team.name if team else None):
            return cleaned  # the model's own message says what is wrong
        known = template_scope_known if template else scope_known
        if known(self.scope_request, scope):
            return cleaned
        self.fields["confirm_scope"].widget = forms.CheckboxInput()
        if not cleaned.get("confirm_scope"):
            seen = scope_suggestions(self.scope_request)
            close = difflib.get_close_matches(
                scope, template_scope_suggestions(seen) if template else seen, n=1, cutoff=0.8
            )
            hint = f" Did you mean {close[0]}?" if close else ""
            what = (
                f"any value of {scope}, so no value would get a budget yet"
                if template
                else f"{scope}, so nothing counts towards it yet"
            )
            self.add_error(
                "scope",
                f"No spend has ever been recorded for {what}.{hint} "
                "Check the spelling, or tick “Save with this scope anyway” below if its spend is still to come.",
            )
            # add_error drops the scope from cleaned_data; the model's checks would then call it missing.
            cleaned["scope"] = scope
        return cleaned


class ScopeChoiceAdminMixin:
    """For the admins of budgets and alert rules (put before admin.ModelAdmin): the scope field
    suggests the scopes that exist, and a never-seen scope asks for confirmation (ScopeConfirmForm).
    The fieldsets name "confirm_scope" right after "scope"."""

    form: type[forms.ModelForm] = ScopeConfirmForm

    def scope_choices(self, request: HttpRequest) -> list[str]:
        """The scope field's suggestions: the scopes that exist (scope_suggestions)."""
        return scope_suggestions(request)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "scope":
            kwargs["widget"] = ScopeInput(self.scope_choices(request))
        return super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]
        return type(form.__name__, (form,), {"scope_request": request})


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


class BudgetForm(ScopeConfirmForm):
    templates_allowed = True
    thresholds = ThresholdsField(
        initial=default_thresholds,
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
            "count_billed",
            "thresholds",
            "forecast_alerts",
            "channels",
            "rollover",
            "rollover_cap",
            "metadata",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("amount", "rollover_cap"):
            if isinstance(value := self.initial.get(name), Decimal):
                self.initial[name] = plain_amount(value)


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
        # A template has no level (each of its values has one).
        active = [b for b in queryset.filter(is_active=True) if not b.is_template]
        statuses = budget_statuses(active, at=timezone.now())
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
class BudgetAdmin(TemplateAdminMixin, ScopeChoiceAdminMixin, TeamScopedAdminMixin, admin.ModelAdmin):
    form = BudgetForm
    # What fits at 1440 px between the navigation and the filters: the scope, period and whether it is a
    # hard limit under the name; what is left and carried under the limit; the level under the bar;
    # long titles wrap to two lines (budgets/static/budgets/budget.css).
    list_display = (
        "name_shown",
        "spent_shown",
        "limit_shown",
        "progress",
        "forecast_shown",
        "days_left_shown",
    )
    list_display_links = ("name_shown",)
    list_filter = (LevelFilter, "period", ScopeKindFilter, team_list_filter("team"), "hard_limit", "is_active")
    search_fields = ("name", "scope", "owner__username", "team__name")
    autocomplete_fields = ()
    list_select_related = ("owner", "team")
    list_per_page = 100
    filter_horizontal = ("channels",)
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "scope", "confirm_scope", "team", "owner", "is_active")}),
        ("Limit", {"fields": ("amount", "currency", "period", "hard_limit", "count_billed")}),
        ("Thresholds and alerts", {"fields": ("thresholds", "forecast_alerts", "channels")}),
        ("Rollover", {"fields": ("rollover", "rollover_cap")}),
        ("Notes", {"fields": ("metadata", "created_at", "updated_at"), "classes": ("collapse",)}),
    )
    change_form_template = "admin/budgets/budget/change_form.html"

    class Media:
        css = {"all": ("budgets/budget.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        self._now = timezone.now()
        return _with_status(super().get_queryset(request), self._now)

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The change list, with the status and forecast of every active budget on the page read
        together (a few statements) rather than a few per row as each column asks for it; a
        template's row has no status, it counts its values (one statement for the page)."""
        changelist = super().get_changelist_instance(request)
        templates = [b for b in changelist.result_list if b.is_template]
        active = [b for b in changelist.result_list if b.is_active and not b.is_template]
        now = getattr(self, "_now", None) or timezone.now()
        for budget, status in zip(active, budget_statuses(active, at=now, forecasts=True), strict=True):
            budget._status_cache = status  # type: ignore[attr-defined]
        counts = value_counts(templates)
        for template in templates:
            template._value_count = counts.get(template.pk, 0)  # type: ignore[attr-defined]
        return changelist

    def scope_choices(self, request: HttpRequest) -> list[str]:
        """The scopes that exist and the templates covering them (subject:* for subject:alice)."""
        scopes = scope_suggestions(request)
        return [*scopes, *template_scope_suggestions(scopes)]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Budget | None = None,
    ) -> Any:
        context["scope_suggestions"] = scope_suggestions(request)
        if obj is not None and obj.pk is not None and obj.is_template:
            # A template has no status of its own (its scope, subject:*, has no spend): its values'.
            can_change = self.has_change_permission(request, obj)
            context["template_page"] = template_page(request, obj, can_change=can_change)
        elif obj is not None and obj.pk is not None:
            context["budget_page"] = budget_page(request, obj)
            if obj.template_id is not None:
                context["value_of"] = value_of(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _status(self, obj: Budget) -> BudgetStatus | None:
        if not obj.is_active or obj.is_template:
            return None
        cached = getattr(obj, "_status_cache", None)
        if cached is None:
            [cached] = budget_statuses([obj], at=getattr(self, "_now", None) or timezone.now(), forecasts=True)
            obj._status_cache = cached  # type: ignore[attr-defined]
        return cached

    @admin.display(description="budget", ordering="name")
    def name_shown(self, obj: Budget) -> SafeString:
        # The period's short name (the form shows the long one).
        notes = [
            *([f"template: {template_each(obj.scope)}"] if obj.is_template else []),
            obj.period,
            *(
                text
                for text, on in (
                    ("own amount", obj.override),
                    ("hard limit", obj.hard_limit),
                    ("inactive", not obj.is_active),
                )
                if on
            ),
        ]
        return format_html(
            '{}<span class="cc-note"><span class="cc-scope">{}</span> · {}</span>',
            obj.name,
            obj.scope,
            ", ".join(notes),
        )

    @admin.display(description="spent")
    def spent_shown(self, obj: Budget) -> str:
        if obj.is_template:  # no spend of its own: its values
            return template_row_note(obj, getattr(obj, "_value_count", 0))
        status = self._status(obj)
        return _right(money(status.spent, obj.currency)) if status else EMPTY

    @admin.display(description="limit")
    def limit_shown(self, obj: Budget) -> str:
        status = self._status(obj)
        if obj.is_template:
            return format_html(
                '{}<span class="cc-num cc-note">each value</span>', _right(money(obj.amount, obj.currency))
            )
        if not status:
            return _right(money(obj.amount, obj.currency))
        currency = obj.currency
        left = (
            f"{money(status.remaining, currency)} left"
            if status.remaining >= 0
            else f"{money(-status.remaining, currency)} over"
        )
        carried = status.period.carried_over
        return format_html(
            '{}<span class="cc-num cc-note">{}</span>{}',
            _right(money(status.limit, currency)),
            left,
            format_html('<span class="cc-num cc-note">incl. {} carried</span>', money(carried, currency))
            if carried
            else "",
        )

    @admin.display(description="used", ordering="_utilisation_bp")
    def progress(self, obj: Budget) -> SafeString | str:
        status = self._status(obj)
        if not status:
            return EMPTY
        if status.utilisation is None:
            return "over a zero limit" if status.spent > 0 else EMPTY
        width = min(status.utilisation, Decimal(100))
        return format_html(
            '<div class="cc-used" title="{} %"><div class="cc-bar"><div class="budget-progress" data-level="{}" '
            'style="width:{}%;background:{}"></div></div><span class="cc-num">{} %</span></div>'
            '<div class="cc-level">{}</div>',
            status.utilisation,
            status.level_label,
            f"{width:f}",
            LEVEL_COLOURS[status.level],
            status.utilisation.quantize(Decimal("0.1")),
            level_badge(status.level),
        )

    @admin.display(description="forecast at period end")
    def forecast_shown(self, obj: Budget) -> SafeString | str:
        status = self._status(obj)
        if not status or status.forecast is None:
            return EMPTY
        text = format_html(
            '<span class="cc-num" title="{}">{}</span>',
            status.forecast.describe(obj.currency),
            money(status.forecast.amount, obj.currency),
        )
        if status.forecast_label:
            return format_html("{}{}", text, forecast_badge(status.forecast_label))
        return text

    @admin.display(description="days left")
    def days_left_shown(self, obj: Budget) -> str:
        status = self._status(obj)
        if not status or status.days_left is None:
            return EMPTY
        return _right(str(status.days_left))


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
    # Read-only: the page shows the amounts as the list does (not the ledger's nine places).
    fields = readonly_fields = (
        "budget",
        "period",
        "service",
        "amount_shown",
        "status_shown",
        "created_at",
        "expires_at",
        "settled_at",
        "released_at",
        "actual_shown",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="amount")
    def amount_shown(self, obj: Reservation) -> str:
        return _money_fine(obj.amount, obj.budget.currency)

    @admin.display(description="actual")
    def actual_shown(self, obj: Reservation) -> str:
        return _money_fine(obj.actual, obj.budget.currency)

    @admin.display(description="status")
    def status_shown(self, obj: Reservation) -> str:
        return obj.status
