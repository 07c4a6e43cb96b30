"""Budget templates in the admin: a template (`subject:*`, `tag:customer=*`, `team:ml/job:*`) and its values.

- The change list shows plain budgets and templates (Budget.objects.listed()); a template's values,
  thousands of them, only when asked for (`?template__id__exact=N`, the template page's link) or found
  by a search on their name or scope (BudgetChangeList).
- A template has no status of its own: its page shows how many values it covers and how they stand
  (budgets.selectors.template_summary), the top values by utilisation with a search box, and a small
  form giving one value an amount of its own (budgets.templates.budget_override_set).
- A value's page is any budget's page (its status, burn-down and period history); only its amount may
  be its own, the rest follows the template (read-only there); "follow the template's amount" clears
  an override (budget_override_clear).
- A template's scope counts as having spend when rollups exist of scopes it covers (those starting
  with core.scopes.template_prefix), among the scopes the user may read: a typo in a tag key
  (`tag:custmer=*`) asks for confirmation as a never-seen scope does (budgets.admin.ScopeConfirmForm).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.scopes import (
    ANY_VALUE,
    scope_inner,
    scope_team,
    service_narrowed,
    template_prefix,
    template_scopes,
    template_value,
)
from tracking.admin import rollup_scopes_seen_by
from tracking.models import SpendRollup

from .admin_display import level_badge, money, percent_text, plain_amount
from .levels import LEVEL_ORDER, level_label
from .models import Budget
from .selectors import template_summary
from .templates import budget_override_clear, budget_override_set

# The change list's parameter for a template's values (the related field's own lookup, as the links
# to a budget's alerts and reservations use).
VALUES_OF = "template__id__exact"
# The template page's search box: the values whose name contains it.
VALUE_SEARCH = "q"
TOP_VALUES = 20

_KIND_WORDS = {
    "provider": "provider",
    "service": "service",
    "model": "model",
    "subject": "end user (subject)",
    "job": "job",
    "team": "team",
}


def template_each(scope: str) -> str:
    """What a template covers, in words: "each end user (subject)", "each value of tag customer",
    "each job of team ml", "each team"."""
    if scope == f"team:{ANY_VALUE}":
        return "each team"
    team, inner = scope_team(scope), scope_inner(scope)
    narrowed = service_narrowed(inner)
    kind, _, rest = (inner if narrowed is None else narrowed[1]).partition(":")
    words = f"each value of tag {rest.partition('=')[0]}" if kind == "tag" else f"each {_KIND_WORDS.get(kind, kind)}"
    if narrowed is not None:
        words += f" of service {narrowed[0]}"
    return words if team is None else f"{words} of team {team}"


def value_change_url(budget: Budget) -> str:
    return reverse("admin:budgets_budget_change", args=[budget.pk])


def values_url(template: Budget) -> str:
    """The change list of the template's values."""
    return f"{reverse('admin:budgets_budget_changelist')}?{urlencode({VALUES_OF: template.pk})}"


def value_counts(templates: list[Budget]) -> dict[int, int]:
    """{template pk: how many values have a budget of their own}, in one statement."""
    if not templates:
        return {}
    rows = (
        Budget.objects.filter(template__in=[t.pk for t in templates])
        .values("template")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return {row["template"]: row["count"] for row in rows}


# --- the scope form: a template's scope with spend, or a likely typo ----------------------------------


def template_scope_known(request: HttpRequest, scope: str) -> bool:
    """Whether any scope `scope` covers has spend recorded (a rollup whose scope starts with the
    template's prefix), among the scopes the user may read (tracking.admin.rollup_scopes_seen_by)."""
    prefix = template_prefix(scope)
    return SpendRollup.objects.filter(rollup_scopes_seen_by(request), scope__startswith=prefix).exists()


def template_scope_suggestions(scopes: list[str]) -> list[str]:
    """The templates covering any of `scopes` (the scopes with spend a user may watch): `subject:*`
    for subject:alice, `tag:customer=*` for tag:customer=acme, `team:ml/job:*` for team:ml/job:x."""
    return sorted(set().union(*map(template_scopes, scopes))) if scopes else []


# --- the change list: plain budgets and templates; values when asked for ------------------------------


def lists_values(request: HttpRequest) -> bool:
    """Whether the change list shows values: a template's (VALUES_OF) or those a search finds."""
    return bool(request.GET.get(VALUES_OF) or request.GET.get(SEARCH_VAR, "").strip())


class BudgetChangeList(ChangeList):
    """Plain budgets and templates (Budget.objects.listed()), never every value of every template;
    the values of one template when asked for (VALUES_OF) or when a search may find them by name or
    scope. The list's filters (the level filter among them) see the same rows."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Budget]:
        if not lists_values(request) and not getattr(self, "_listed", False):
            self.root_queryset = self.root_queryset.listed()
            self._listed = True
        return super().get_queryset(request, exclude_parameters)


# --- a template's page: its values at a glance, an own amount for one value ---------------------------


class ValueOverrideForm(forms.Form):
    value = forms.CharField(
        label="Value",
        max_length=200,
        help_text="The value as it is recorded, e.g. alice for an end user.",
    )
    amount = forms.CharField(
        label="Amount",
        max_length=40,
        help_text="What this value may spend per period instead of the template's amount.",
    )

    def add_service_error(self, error: ValidationError) -> None:
        """budget_override_set's error on this form's fields: the scope is the template's and the
        value's, so a problem with it is the value's."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for field, problems in error.message_dict.items():
            name = "value" if field == "scope" else field
            self.add_error(name if name in self.fields else None, problems)


@dataclass(frozen=True)
class ValueRow:
    value: str
    url: str
    spent: str
    limit: str
    used: str
    level: SafeString
    own_amount: bool


def template_page(request: HttpRequest, template: Budget, *, can_change: bool) -> dict[str, Any]:
    """What a template's change page shows above its form: how many values it covers, how many spent
    this period and at which level, the top values by utilisation (those matching the search box),
    from one template_summary read; no status of the template itself (it has none). template_summary
    gives a value that spent and has no budget yet its budget (as the next alert pass would)."""
    search = request.GET.get(VALUE_SEARCH, "").strip()[:200]
    summary = template_summary(template, at=timezone.now(), search=search, top=TOP_VALUES)
    currency = template.currency
    rows = [
        ValueRow(
            value=template_value(template.scope, status.budget.scope),
            url=value_change_url(status.budget),
            spent=money(status.spent, currency),
            limit=money(status.limit, currency),
            used=percent_text(status.utilisation),
            level=level_badge(status.level),
            own_amount=status.budget.override,
        )
        for status in summary.top
    ]
    return {
        "summary": summary,
        "each": template_each(template.scope),
        "amount": money(template.amount, currency),
        "levels": [(level_badge(level), summary.levels.get(level_label(level), 0)) for level in (None, *LEVEL_ORDER)],
        "rows": rows,
        "search": search,
        "search_name": VALUE_SEARCH,
        "preserved_filters": request.GET.get("_changelist_filters", ""),
        "values_url": values_url(template),
        "override_url": reverse("admin:budgets_budget_override", args=[template.pk]) if can_change else "",
        "override_form": ValueOverrideForm(auto_id="id_override_%s") if can_change else None,
    }


def value_of(value: Budget) -> SafeString:
    """ "Value alice of template <Per user>": a value's page says whose settings it follows."""
    template = value.settings_from
    own = (
        f"its own amount ({money(value.amount, value.currency)}; the template's: "
        f"{money(template.amount, template.currency)})"
        if value.override
        else f"the template's amount ({money(template.amount, template.currency)})"
    )
    return format_html(
        'Value <strong class="cc-value">{}</strong> of template <a href="{}">{}</a> ({}): it has {} and '
        "follows the template's other settings.",
        value.value,
        value_change_url(template),
        template.name,
        template.scope,
        own,
    )


# --- a value's page: only the amount is its own -------------------------------------------------------


class ValueForm(forms.ModelForm):
    """A value's form: its amount (a changed amount becomes its own) and, to drop its own amount,
    "follow the template's amount". Everything else is the template's (read-only on the page)."""

    follow_template = forms.BooleanField(
        label="Follow the template's amount",
        required=False,
        help_text="Tick to drop this value's own amount: it takes the template's amount again, and follows "
        "it when the template's amount changes.",
    )

    class Meta:
        model = Budget
        fields = ("amount",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored_amount = self.instance.amount
        template = self.instance.template
        if "amount" in self.fields and template is not None:
            self.fields["amount"].help_text = (
                "This value's own amount; the template's is "
                if self.instance.override
                else "Follows the template's amount; change it to give this value an amount of its own. "
                "The template's is "
            ) + f"{money(template.amount, template.currency)}."
        if isinstance(value := self.initial.get("amount"), Decimal):
            self.initial["amount"] = plain_amount(value)
        if not self.instance.override:
            self.fields.pop("follow_template", None)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("follow_template") and self.amount_changed:
            self.add_error(
                "follow_template",
                "Either change the amount or follow the template's amount, not both.",
            )
        return cleaned

    @property
    def amount_changed(self) -> bool:
        """Whether the amount typed differs from the value's (the form shows it as text: 10.00)."""
        amount = self.cleaned_data.get("amount")
        return amount is not None and amount != self.stored_amount


_FOLLOWS = "Set on the template and followed by every value: change it there."
VALUE_EDITABLE = ("amount", "follow_template")


def value_fieldsets(value: Budget) -> tuple[tuple[str | None, dict[str, Any]], ...]:
    """A value's page: what it follows, read-only, and its amount ("follow the template's amount"
    once it has one of its own)."""
    amount = ("amount", "follow_template") if value.override else ("amount",)
    return (
        (None, {"fields": ("name", "scope", "team", "owner", "is_active"), "description": _FOLLOWS}),
        (
            "Limit",
            {
                "fields": (*amount, "currency", "period", "hard_limit"),
                "description": "Only the amount may be this value's own; the currency, period and hard limit "
                "follow the template.",
            },
        ),
        (
            "Thresholds and alerts",
            {"fields": ("thresholds_shown", "forecast_alerts", "channels_shown"), "description": _FOLLOWS},
        ),
        ("Rollover", {"fields": ("rollover", "rollover_cap_shown"), "description": _FOLLOWS}),
        ("Notes", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )


def _is_value(obj: Budget | None) -> bool:
    return obj is not None and obj.template_id is not None


def _is_template(obj: Budget | None) -> bool:
    return obj is not None and obj.pk is not None and obj.is_template


class TemplateAdminMixin:
    """The template and value parts of BudgetAdmin (put first in its bases): the change list that
    hides values, a value's form (its amount only), a template's "own amount for one value" page."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BudgetChangeList

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """The list of a template's values says whose they are."""
        wanted = request.GET.get(VALUES_OF, "")
        if wanted.isdigit():
            visible = self.get_queryset(request).filter(pk=int(wanted))  # type: ignore[attr-defined]
            if (name := visible.values_list("name", flat=True).first()) is not None:
                extra_context = {"title": f"Values of template {name}", **(extra_context or {})}
        return super().changelist_view(request, extra_context)  # type: ignore[misc]

    def get_fieldsets(self, request: HttpRequest, obj: Budget | None = None) -> Any:
        if obj is not None and _is_value(obj):
            return value_fieldsets(obj)
        fieldsets = super().get_fieldsets(request, obj)  # type: ignore[misc]
        if obj is not None and _is_template(obj):
            (title, options), *rest = fieldsets
            note = (
                f"A template: {template_each(obj.scope)} gets a budget of its own with these settings when it "
                "first spends. Saving updates every value; those with an amount of their own keep it."
            )
            fieldsets = ((title, {**options, "description": note}), *rest)
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Budget | None = None) -> Any:
        readonly = tuple(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if obj is not None and _is_value(obj):
            fields = [f for _, options in value_fieldsets(obj) for f in options["fields"]]
            return (*readonly, *(f for f in fields if f not in VALUE_EDITABLE and f not in readonly))
        if _is_template(obj) and obj is not None and obj.values.exists():
            # Its values' budgets were made for this scope; another scope is another template.
            return (*readonly, "scope")
        return readonly

    def get_form(self, request: HttpRequest, obj: Budget | None = None, change: bool = False, **kwargs: Any) -> Any:
        if _is_value(obj):
            kwargs["form"] = ValueForm
        return super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]

    def save_model(self, request: HttpRequest, obj: Budget, form: Any, change: bool) -> None:
        """A value's form changes its amount only, through the services: a changed amount becomes its
        own (budget_override_set), "follow the template's amount" drops it (budget_override_clear)."""
        if not _is_value(obj):
            super().save_model(request, obj, form, change)  # type: ignore[misc]
            return
        if form.cleaned_data.get("follow_template"):
            budget_override_clear(budget=obj)
        elif form.amount_changed:
            budget_override_set(template=obj.template, value=obj.value, amount=obj.amount)

    @admin.display(description="thresholds (%)")
    def thresholds_shown(self, obj: Budget) -> str:
        return ", ".join(str(t) for t in obj.thresholds)

    @admin.display(description="channels")
    def channels_shown(self, obj: Budget) -> str:
        names = [str(c) for c in obj.settings_from.channels.all()]
        return ", ".join(names) if names else "the default channels"

    @admin.display(description="rollover cap")
    def rollover_cap_shown(self, obj: Budget) -> str:
        return "no cap" if obj.rollover_cap is None else money(obj.rollover_cap, obj.currency)

    # --- "own amount for one value", from the template's page ---

    def get_urls(self) -> list[Any]:
        opts = self.opts  # type: ignore[attr-defined]
        view = self.admin_site.admin_view(self.override_view)  # type: ignore[attr-defined]
        return [
            path("<path:object_id>/own-amount/", view, name=f"{opts.app_label}_{opts.model_name}_override"),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def override_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Give one value of a template an amount of its own. Posted from the template's page; shown
        on a page of its own with the form's errors (and on GET, e.g. from a value's row)."""
        template = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if not _is_template(template):
            raise Http404("No such template.")
        if not self.has_change_permission(request, template):  # type: ignore[attr-defined]
            raise PermissionDenied
        form = ValueOverrideForm(request.POST or None, initial={"value": request.GET.get("value", "")})
        if request.method == "POST" and form.is_valid():
            try:
                value = budget_override_set(
                    template=template, value=form.cleaned_data["value"], amount=form.cleaned_data["amount"]
                )
            except ValidationError as error:
                form.add_service_error(error)
            else:
                text = (
                    f"{value.value} has an amount of its own: {money(value.amount, value.currency)} ({value.period})."
                )
                self.log_change(request, value, text)  # type: ignore[attr-defined]
                self.message_user(request, text, messages.SUCCESS)  # type: ignore[attr-defined]
                page = value_change_url(template)
                return redirect(f"{page}?{urlencode({VALUE_SEARCH: value.value})}")
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "opts": self.opts,  # type: ignore[attr-defined]
            "original": template,
            "title": f"Own amount for one value of {template.name}",
            "form": form,
            "each": template_each(template.scope),
            "amount": money(template.amount, template.currency),
        }
        return TemplateResponse(request, "admin/budgets/budget/own_amount.html", context)


def template_row_note(obj: Budget, count: int) -> SafeString:
    """The change list's spent column for a template: how many values it has, linked to their list."""
    return format_html('<a class="cc-num" href="{}">{} value{}</a>', values_url(obj), count, "" if count == 1 else "s")
