"""The admin is the main screen: a UI over the tracking services, never around them.

- Prices are versioned: changing a unit price (or adding one) goes through the catalog
  service, which closes the version in force and opens a new one; no version is edited in place.
- The ledger is append-only: entries are viewed, never added, edited or deleted here; the only
  write is the "Correct the amount" action, which appends a correcting entry.
- Rollups are derived data and read-only.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import mark_safe

from core.money import MoneyField, format_money, format_money_fine
from core.periods import moment_text
from core.scopes import scope_errors, scope_inner, scope_team, team_scope
from core.teams import TeamScopedAdminMixin, exists_for_teams, sees_every_team, team_list_filter, user_teams

from .admin_display import EMPTY, LIST_PER_PAGE, _change_url, _exactly, _right, _sub, duration_words, money_fine
from .batches import lead_unit
from .events import QUANTITY_FIELDS
from .focus import focus_csv_lines, focus_export_write
from .models import (
    TOKEN_FIELDS,
    Batch,
    CostEntry,
    Price,
    ServiceTier,
    SpendRollup,
    SpendRollupDay,
    Unit,
)
from .provenance import (
    context_tier_words,
    operation_words,
    price_amount,
    price_per,
    price_words,
    provenance_lines,
    quantity_lines,
    service_tier_words,
    unit_words,
)
from .selectors import entry_scope_q, price_history, scope_filter, team_scopes_filter
from .services import cost_entry_correct


def _describe(error: ValidationError) -> str:
    """A ValidationError as one line that names its fields: "amount: 'abc' is not a number"."""
    if hasattr(error, "error_dict"):
        return "; ".join(f"{name}: {' '.join(texts)}" for name, texts in error.message_dict.items())
    return " ".join(error.messages)


class EstimatedCountPaginator(Paginator):
    """Counts an unfiltered large table from PostgreSQL's statistics instead of COUNT(*).

    `show_full_result_count = False` only drops the second (unfiltered) count; the change list
    still counts its own queryset to paginate, which on an unfiltered ledger is a full scan.
    Filtered lists and small tables are counted exactly.
    """

    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                        [queryset.model._meta.db_table],
                    )
                    row = cursor.fetchone()
                # reltuples is -1 for a table never analysed.
                if row is not None and row[0] >= self.exact_below:
                    return int(row[0])
        return super().count


# --- prices --------------------------------------------------------------------------------


def _in_force_now() -> Q:
    now = timezone.now()
    return Q(valid_from__lte=now) & (Q(valid_until__isnull=True) | Q(valid_until__gt=now))


class InForceFilter(admin.SimpleListFilter):
    title = "in force now"
    parameter_name = "in_force"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No (superseded or not yet valid)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Price]) -> QuerySet[Price]:
        if self.value() == "yes":
            return queryset.filter(_in_force_now())
        if self.value() == "no":
            return queryset.exclude(_in_force_now())
        return queryset


class ServiceTierFilter(admin.SimpleListFilter):
    """The tiers the catalog has prices for ("standard" stands for the empty tier)."""

    title = "service tier"
    parameter_name = "service_tier"
    STANDARD = "standard"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        present = set(Price.objects.order_by().values_list("service_tier", flat=True).distinct())
        return [
            (tier or self.STANDARD, service_tier_words(tier))
            for tier in [*ServiceTier.values, *sorted(present - set(ServiceTier.values))]
            if tier in present
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Price]) -> QuerySet[Price]:
        if self.value():
            return queryset.filter(service_tier="" if self.value() == self.STANDARD else self.value())
        return queryset


class ContextTierFilter(admin.SimpleListFilter):
    """Context-size tiers: "any prompt size" (above 0) or "above 200k tokens" and the like."""

    title = "context tier"
    parameter_name = "above_tokens"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        present = sorted(set(Price.objects.order_by().values_list("above_tokens", flat=True).distinct()))
        return [(str(above), context_tier_words(above) or "any prompt size") for above in present]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Price]) -> QuerySet[Price]:
        if self.value() is not None and self.value().isdigit():
            return queryset.filter(above_tokens=int(self.value()))
        return queryset


class PriceForm(forms.ModelForm):
    class Meta:
        model = Price
        fields = (
            "provider",
            "model",
            "operation",
            "unit",
            "variant",
            "service_tier",
            "above_tokens",
            "off_peak_windows",
            "unit_price",
            "currency",
            "valid_from",
            "source",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The column has 15 places; show 0.0000025, not 0.000002500000000. (A Decimal, not a
        # string, so that an untouched price does not count as changed.)
        price = self.initial.get("unit_price")
        if isinstance(price, Decimal):
            self.initial["unit_price"] = price.normalize()
        if "above_tokens" in self.fields:  # left empty: from the first token
            self.fields["above_tokens"].required = False

    def clean_above_tokens(self) -> int:
        return self.cleaned_data.get("above_tokens") or 0


def _rules_url(price: Price) -> str:
    return reverse("admin:tracking_price_rules") + "?" + urlencode({"provider": price.provider, "model": price.model})


def off_peak_words(windows: Any) -> str:
    """[{"hours_utc": ["16:30-00:30"], "weekdays": [1, 2, 3, 4, 5]}] -> "16:30-00:30 UTC, Mon-Fri"."""
    if not windows:
        return ""
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    shown = []
    for window in windows if isinstance(windows, list) else [windows]:
        if not isinstance(window, dict):
            shown.append(str(window))
            continue
        hours = window.get("hours_utc") or []
        text = ", ".join(map(str, hours if isinstance(hours, list) else [hours])) + " UTC"
        weekdays = window.get("weekdays")
        if isinstance(weekdays, list) and weekdays and sorted(weekdays) != list(range(1, 8)):
            names = [days[d - 1] for d in sorted(weekdays) if isinstance(d, int) and 1 <= d <= 7]
            run = sorted(weekdays) == list(range(min(weekdays), max(weekdays) + 1))
            text += ", " + (f"{names[0]}-{names[-1]}" if run and len(names) > 2 else " ".join(names))
        else:
            text += ", every day"
        shown.append(text)
    return "; ".join(shown)


ALWAYS_SHOWN_TIERS = (ServiceTier.STANDARD, ServiceTier.BATCH, ServiceTier.FLEX, ServiceTier.PRIORITY)


def price_rules_table(prices: list[Price]) -> dict[str, Any]:
    """A model's prices as a table: a row per (operation, unit, variant, context tier), a column per
    service tier (standard first, then the others the model has, in ServiceTier order)."""
    present = {p.service_tier for p in prices}
    # The tiers most providers sell are always shown (an empty column says "not sold"); the rare ones when priced.
    tiers = [t for t in ServiceTier.values if t in present or t in ALWAYS_SHOWN_TIERS]
    tiers += sorted(present - set(tiers))
    operations = sorted({p.operation for p in prices})
    unit_order = {unit: i for i, unit in enumerate(Unit.values)}
    rows: dict[tuple[str, int, str, int], dict[str, Any]] = {}
    for price in prices:
        key = (price.operation, unit_order.get(price.unit, len(unit_order)), price.variant, price.above_tokens)
        row = rows.setdefault(
            key,
            {
                "operation": price.operation or "any operation",
                "label": ", ".join(
                    filter(
                        None,
                        (unit_words(price.unit, plural=True), price.variant, context_tier_words(price.above_tokens)),
                    )
                ),
                "per": price_per(price.unit, short=True),
                "cells": {},
            },
        )
        row["cells"][price.service_tier] = {
            "amount": price_amount(price.unit_price, price.currency, price.unit),
            "exact": f"{price.unit_price.normalize():f} {price.currency} per {unit_words(price.unit)}, since "
            f"{timezone.localtime(price.valid_from):%Y-%m-%d %H:%M %Z}",
            "url": _change_url(price),
        }
    table = [{**row, "cells": [row["cells"].get(t) for t in tiers]} for _, row in sorted(rows.items())]
    missing = [service_tier_words(t) for t in tiers if t not in present]
    windows = [p.off_peak_windows for p in prices if p.service_tier == ServiceTier.OFF_PEAK and p.off_peak_windows]
    return {
        "tiers": [service_tier_words(t) for t in tiers],
        "rows": table,
        "several_operations": len(operations) > 1,
        "missing_tiers": missing,
        "missing_tiers_words": " or ".join(filter(None, (", ".join(missing[:-1]), *missing[-1:]))),
        "has_context_tiers": any(p.above_tokens for p in prices),
        "off_peak": off_peak_words(windows[0]) if windows else "",
    }


THIS_VERSION = mark_safe(' style="font-weight:bold" title="this version"')


class _CatalogRefused(Exception):
    """The catalog service refused a price; carries its ValidationError out of the atomic block."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(str(error))
        self.error = error


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    form = PriceForm
    # What fits at 1440 px beside the filters: the model (its rules page under it), the price (a link to
    # this version), the tier it applies to (context tier, variant and off-peak hours under it), and
    # whether it is in force (since when, until when under it).
    list_display = ("model_shown", "price_display", "tier_shown", "validity")
    list_display_links = ("price_display",)
    list_filter = ("provider", "unit", ServiceTierFilter, ContextTierFilter, InForceFilter)
    # A unit's tiers together: standard first, then by service tier, each by context size.
    ordering = ("provider", "model", "operation", "unit", "variant", "service_tier", "above_tokens", "-valid_from")
    search_fields = ("provider", "model")
    date_hierarchy = "valid_from"
    list_per_page = LIST_PER_PAGE
    fieldsets = (
        (None, {"fields": ("provider", "model", "operation", "unit", "variant")}),
        ("Price", {"fields": ("unit_price", "currency", "valid_from")}),
        ("History", {"fields": ("history",)}),
        ("Advanced", {"classes": ("collapse",), "fields": ("source", "valid_until", "created_at")}),
    )
    # A new price names its tier; a version's tier is part of what it prices (shown, not edited).
    ADD_TIER_FIELDSET = ("Tier", {"fields": ("service_tier", "above_tokens", "off_peak_windows")})
    TIER_FIELDSET = ("Tier", {"fields": ("service_tier_display", "context_tier", "off_peak", "price_display", "rules")})

    # A price's key, as the catalog's price_set versions it.
    KEY_FIELDS = ("provider", "model", "operation", "unit", "variant", "service_tier", "above_tokens")
    TIER_FIELDS = ("service_tier_display", "context_tier", "off_peak", "price_display", "rules")

    def get_fieldsets(self, request: HttpRequest, obj: Price | None = None) -> Any:
        if obj is None:
            # A new price has no history yet.
            return (self.fieldsets[0], self.ADD_TIER_FIELDSET, *(f for f in self.fieldsets[1:] if f[0] != "History"))
        return (self.fieldsets[0], self.TIER_FIELDSET, *self.fieldsets[1:])

    def get_readonly_fields(self, request: HttpRequest, obj: Price | None = None) -> tuple[str, ...]:
        if obj is None:
            # valid_until is the catalog's to set, when a newer version replaces this one.
            return ("history", "valid_until", "created_at")
        # What is priced and since when is this version's identity; a new price is a new version.
        readonly = (
            *self.KEY_FIELDS,
            *self.TIER_FIELDS,
            "off_peak_windows",
            "valid_from",
            "valid_until",
            "history",
            "created_at",
        )
        if obj.valid_until is not None:
            # A superseded version is history: its price can no longer change.
            readonly += ("unit_price", "currency")
        return readonly

    def get_urls(self) -> list[Any]:
        rules = path("rules/", self.admin_site.admin_view(self.rules_view), name="tracking_price_rules")
        return [rules, *super().get_urls()]

    def rules_view(self, request: HttpRequest) -> HttpResponse:
        """Every unit price of one provider/model in force now, side by side by service tier."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        provider, model = request.GET.get("provider", ""), request.GET.get("model", "")
        if not provider or not model:
            raise Http404("Which model? Open this page from a price.")
        prices = list(Price.objects.filter(provider=provider, model=model).filter(_in_force_now()))
        context = {
            **self.admin_site.each_context(request),
            "title": f"All rules of {provider}/{model}",
            "subtitle": None,
            "opts": self.opts,
            "provider": provider,
            "model": model,
            "at": timezone.localtime(),
            **price_rules_table(prices),
            "superseded_url": reverse("admin:tracking_price_changelist")
            + "?"
            + urlencode({"provider": provider, "q": model, "in_force": "no"}),
        }
        return TemplateResponse(request, "admin/tracking/price/rules.html", context)

    @admin.display(description="service tier", ordering="service_tier")
    def service_tier_display(self, obj: Price) -> str:
        return service_tier_words(obj.service_tier)

    @admin.display(description="context tier", ordering="above_tokens")
    def context_tier(self, obj: Price) -> str:
        return context_tier_words(obj.above_tokens) or "any prompt size"

    @admin.display(description="off-peak hours")
    def off_peak(self, obj: Price) -> str:
        return off_peak_words(obj.off_peak_windows) or EMPTY

    @admin.display(description="price", ordering="unit_price")
    def price_display(self, obj: Price) -> str:
        return format_html(
            '<span title="{} {} per {}">{}</span>',
            f"{obj.unit_price.normalize():f}",
            obj.currency,
            unit_words(obj.unit),
            price_words(obj.unit_price, obj.currency, obj.unit),
        )

    @admin.display(description="model", ordering="model")
    def model_shown(self, obj: Price) -> str:
        return format_html(
            '{}/{}<span class="cc-sub"><a href="{}" title="every price of {}/{} in force, side by side">all rules</a>'
            "</span>",
            obj.provider,
            obj.model,
            _rules_url(obj),
            obj.provider,
            obj.model,
        )

    @admin.display(description="tier", ordering="service_tier")
    def tier_shown(self, obj: Price) -> str:
        notes = [
            context_tier_words(obj.above_tokens) or "any prompt size",
            *([f"variant {obj.variant}"] if obj.variant else []),
            *([f"off-peak {off_peak_words(obj.off_peak_windows)}"] if obj.off_peak_windows else []),
        ]
        return format_html("{}{}", service_tier_words(obj.service_tier), _sub(" · ".join(notes)))

    @admin.display(description="all rules")
    def rules(self, obj: Price) -> str:
        return format_html('<a href="{}">all rules of {}/{}</a>', _rules_url(obj), obj.provider, obj.model)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"valid_from": timezone.now(), **super().get_changeform_initial_data(request)}

    def has_delete_permission(self, request: HttpRequest, obj: Price | None = None) -> bool:
        # Entries name the price versions that priced them (prices_used); deleting one loses that.
        return False

    @admin.display(description="in force", ordering="valid_from")
    def validity(self, obj: Price) -> str:
        since = f"{timezone.localtime(obj.valid_from):%Y-%m-%d %H:%M}"
        until = "" if obj.valid_until is None else f"{timezone.localtime(obj.valid_until):%Y-%m-%d %H:%M}"
        now = timezone.now()
        if obj.valid_from > now:
            return format_html('<span class="cc-quiet">not yet</span>{}', _sub(f"from {since}"))
        if obj.valid_until is not None and obj.valid_until <= now:
            return format_html('<span class="cc-quiet">superseded</span>{}', _sub(f"{since} to {until}"))
        return format_html("in force{}", _sub(f"since {since}" + (f", until {until}" if until else "")))

    @admin.display(description="history")
    def history(self, obj: Price) -> str:
        if obj.pk is None:
            return EMPTY
        rows = format_html_join(
            "",
            '<tr{}><td><a href="{}">{}</a></td><td>{}</td><td title="{}">{}</td><td>{}</td></tr>',
            (
                (
                    THIS_VERSION if version.pk == obj.pk else "",
                    _change_url(version),
                    moment_text(version.valid_from),
                    moment_text(version.valid_until) if version.valid_until else "in force",
                    f"{version.unit_price.normalize():f} {version.currency} per {unit_words(version.unit)}",
                    price_words(version.unit_price, version.currency, version.unit),
                    version.source or EMPTY,
                )
                for version in price_history(obj)
            ),
        )
        return format_html(
            '<table class="price-history"><thead><tr><th>valid from</th><th>valid until</th>'
            "<th>price</th><th>source</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _CatalogRefused as refused:
            # Raised inside the admin's transaction, which is rolled back: nothing was written.
            self.message_user(request, f"Price not saved: {_describe(refused.error)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: HttpRequest, obj: Price, form: forms.ModelForm, change: bool) -> None:
        """Prices are versioned: a new price or a changed unit price is a new version from the catalog.

        Changing only the source (a description) is saved in place.
        """
        if change and not {"unit_price", "currency"} & set(form.changed_data):
            super().save_model(request, obj, form, change)
            return

        from .catalog import price_set

        key = {name: getattr(obj, name) for name in self.KEY_FIELDS}
        in_force = Price.objects.filter(**key, valid_until__isnull=True).values_list("pk", flat=True).first()
        username = request.user.get_username()
        source = f"admin: {username}"
        if "source" in form.changed_data and obj.source:
            source = f"{source} ({obj.source})"[: Price._meta.get_field("source").max_length]
        try:
            new = price_set(
                **key,
                off_peak_windows=obj.off_peak_windows or None,
                unit_price=obj.unit_price,
                currency=obj.currency,
                valid_from=obj.valid_from if not change else timezone.now(),
                source=source,
            )
        except ValidationError as exc:
            raise _CatalogRefused(exc) from exc
        if new.pk == in_force:
            # The catalog keeps the version in force when it already has this price: nothing was written.
            request._costcontrol_price_unchanged = new  # type: ignore[attr-defined]
        elif change:
            # The edited version stays as it is in the database (the catalog closed it);
            # response_change takes the user to the new one.
            self.log_addition(request, new, f"New version replacing #{obj.pk}.")
            request._costcontrol_new_price = new  # type: ignore[attr-defined]
        if not change:
            # The admin logs the addition and links to the object it saved: make it the new version.
            for field in Price._meta.concrete_fields:
                setattr(obj, field.attname, getattr(new, field.attname))
            obj._state.adding = False
            obj._state.db = new._state.db

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if getattr(request, "_costcontrol_price_unchanged", None) is not None:
            return None  # nothing was added
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if getattr(request, "_costcontrol_price_unchanged", None) is not None:
            return None
        return super().log_change(request, obj, message)

    def _response_unchanged(self, request: HttpRequest) -> HttpResponse | None:
        current = getattr(request, "_costcontrol_price_unchanged", None)
        if current is None:
            return None
        self.message_user(
            request,
            f"Nothing changed: {current} is already in force (since {moment_text(current.valid_from)}).",
            messages.WARNING,
        )
        return HttpResponseRedirect(_change_url(current))

    def response_add(self, request: HttpRequest, obj: Price, post_url_continue: str | None = None) -> HttpResponse:
        return self._response_unchanged(request) or super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: Price) -> HttpResponse:
        unchanged = self._response_unchanged(request)
        if unchanged is not None:
            return unchanged
        new = getattr(request, "_costcontrol_new_price", None)
        if new is None:
            return super().response_change(request, obj)
        when = moment_text(new.valid_from)
        self.message_user(
            request,
            f"Price changed: new version from {when}; the previous version is kept in the history.",
            messages.SUCCESS,
        )
        if "_continue" in request.POST:
            return HttpResponseRedirect(_change_url(new))
        return HttpResponseRedirect(reverse("admin:tracking_price_changelist"))


# --- the ledger ----------------------------------------------------------------------------


class ReportedCostFilter(admin.SimpleListFilter):
    """Entries whose sender reported a cost of its own (LiteLLM, an OpenTelemetry span), and whether it agrees."""

    title = "reported cost"
    parameter_name = "reported"
    CHOICES = {
        "differs": ("differs from ours", Q(reported_differs=True)),
        "agrees": ("agrees with ours", Q(reported_differs=False)),
        "none": ("none reported", Q(reported_amount__isnull=True)),
    }

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(value, words) for value, (words, _) in self.CHOICES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CostEntry]) -> QuerySet[CostEntry]:
        chosen = self.CHOICES.get(self.value() or "")
        return queryset.filter(chosen[1]) if chosen else queryset


class ProviderFilter(admin.SimpleListFilter):
    """Providers from the catalog (and the configured extras), not a DISTINCT over the ledger.

    An entry can only be recorded for one of these, so nothing is missing from the list.
    """

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        providers = set(Price.objects.values_list("provider", flat=True).distinct())
        providers.update(settings.COSTCONTROL_EXTRA_PROVIDERS)
        return [(provider, provider) for provider in sorted(providers)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CostEntry]) -> QuerySet[CostEntry]:
        if self.value():
            return queryset.filter(provider=self.value())
        return queryset


# Query parameters of the cost entry list that other pages link to (each is a list filter here):
#   provider, model, service, job  an entry field equal to the value (?model=gpt-4o&service=support)
#   scope                          every entry that counts towards a rollup scope: global, provider:X,
#                                  model:X, operation:X, service:X, subject:X, job:X, tag:K=V, team:NAME,
#                                  team:NAME/KIND:VALUE (a budget's or an alert's scope, as it is)
#   occurred_at__gte, occurred_at__lt  the window [from, until): an ISO date (local midnight) or date-time
#                                  (2026-03-18T00:00:00+00:00; without an offset: local time)
#   currency                       an ISO code (a budget counts the entries of its currency only)
#   team (a team's id, or "none"), pricing_status__exact, outcome__exact, is_estimate__exact, q (search)
# A staff member who is not a superuser sees their teams' entries whatever the parameters say.
ENTRY_WINDOW_PARAMETERS = ("occurred_at__gte", "occurred_at__lt")


def entry_scope_errors(scope: Any) -> list[str]:
    """What is wrong with `scope` as a filter of the ledger: the rollups' grammar (core.scopes), with the
    operation scopes that the rollups also keep (operation:gpu_idle)."""
    if not isinstance(scope, str):
        return ["a scope is required, e.g. provider:openai or team:ml/service:search"]
    team, inner = scope_team(scope), scope_inner(scope)
    kind, sep, value = inner.partition(":")
    if kind == "operation" and team != "":
        if not sep or not value.strip() or value != value.strip():
            return [f"scope {scope!r} needs an operation after the colon, e.g. operation:chat"]
        return [] if team is None else scope_errors(team_scope(team))
    return scope_errors(scope)


def entry_moment(value: str, *, field: str = "occurred_at") -> datetime:
    """A window bound from a query parameter: an ISO date (local midnight) or date-time (local time
    without an offset). A "+" of an offset that arrived as a space (an unencoded link) is read as "+"."""
    text = str(value).strip()
    spaced = re.fullmatch(r"(.+[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})", text)
    if spaced:
        text = f"{spaced.group(1)}+{spaced.group(2)}"
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = None if day is None else datetime.combine(day, time.min)
    except ValueError:
        moment = None
    if moment is None:
        raise ValidationError(
            {field: f"{value!r} is not a date or a time (e.g. 2026-03-18 or 2026-03-18T09:00:00+00:00)"}
        )
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def entry_filter_errors(params: Any) -> list[str]:
    """What is wrong with the cost entry list's linkable parameters, each naming its parameter."""
    errors = []
    if "scope" in params:
        errors += [f"scope: {problem}" for problem in entry_scope_errors(params.get("scope"))]
    for name in ENTRY_WINDOW_PARAMETERS:
        if name in params:
            try:
                entry_moment(params.get(name), field=name)
            except ValidationError as exc:
                errors.append(_describe(exc))
    return errors


def entries_url(
    scope: str = "global", *, start: datetime | None = None, end: datetime | None = None, **fields: str
) -> str:
    """The cost entry list filtered to `scope` over [start, end) (and any entry fields, job=...)."""
    params = {} if scope == "global" else {"scope": scope}
    params.update({name: value for name, value in fields.items() if value})
    if start is not None:
        params["occurred_at__gte"] = start.isoformat()
    if end is not None:
        params["occurred_at__lt"] = end.isoformat()
    url = reverse("admin:tracking_costentry_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def _local_midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class OccurredAtFilter(admin.DateFieldListFilter):
    """When: today, yesterday, the past 7 days, this and last month, this year; and any window given
    as occurred_at__gte / occurred_at__lt (a budget's period, an alert's window), read in local time."""

    def __init__(self, field: Any, request: HttpRequest, params: Any, model: Any, model_admin: Any, field_path: str):
        super().__init__(field, request, params, model, model_admin, field_path)
        today = timezone.localdate()
        first = today.replace(day=1)
        last_month = (first - timedelta(days=1)).replace(day=1)
        next_month = (first + timedelta(days=32)).replace(day=1)
        since, until = self.lookup_kwarg_since, self.lookup_kwarg_until

        def days(start: date, end: date) -> dict[str, datetime]:
            return {since: _local_midnight(start), until: _local_midnight(end)}

        self.links = (
            ("Any date", {}),
            ("Today", days(today, today + timedelta(days=1))),
            ("Yesterday", days(today - timedelta(days=1), today)),
            ("Past 7 days", days(today - timedelta(days=6), today + timedelta(days=1))),
            ("This month", days(first, next_month)),
            ("Last month", days(last_month, first)),
            ("This year", days(today.replace(month=1, day=1), today.replace(year=today.year + 1, month=1, day=1))),
        )

    def queryset(self, request: HttpRequest, queryset: QuerySet[CostEntry]) -> QuerySet[CostEntry]:
        bounds = {name: entry_moment(values[-1], field=name) for name, values in self.used_parameters.items()}
        return queryset.filter(**bounds)


class ScopeFilter(admin.SimpleListFilter):
    """?scope=...: the entries counting towards a budget's or an alert's scope (entry_scope_q). Shown only
    while it filters (the other filters choose the dimensions one by one)."""

    title = "scope"
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, value)] if value else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[CostEntry]) -> QuerySet[CostEntry]:
        if self.value():
            return queryset.filter(entry_scope_q(self.value()))
        return queryset


class LedgerValueFilter(admin.SimpleListFilter):
    """One of the entry's dimensions (model, service, job). The choices are the values that spent in the
    last `recent_days` as the daily rollups know them (a team member: their teams' copies only), the
    most recent `most` of them: never a DISTINCT over the ledger. Any value given in the URL filters,
    and is shown as chosen."""

    recent_days = 92
    most = 40
    newest_first = False

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        kind = f"{self.parameter_name}:"
        if sees_every_team(request):
            prefixes = [kind]
        else:
            prefixes = [team_scope(name, kind) for name in user_teams(request).values_list("name", flat=True)]
        values: list[str] = []
        if prefixes:
            since = (timezone.now() - timedelta(days=self.recent_days)).replace(hour=0, minute=0, second=0)
            rows = (
                SpendRollupDay.objects.filter(scope_filter(None, prefixes), bucket__gte=since)
                .values("scope")
                .annotate(last=Max("bucket"))
                .order_by("-last", "scope")
            )
            for row in rows[: self.most * max(len(prefixes), 1)]:
                value = scope_inner(row["scope"])[len(kind) :]
                if value not in values:
                    values.append(value)
            values = values[: self.most]
        if not self.newest_first:
            values.sort()
        if self.value() and self.value() not in values:
            values.insert(0, self.value())
        return [(value, value) for value in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CostEntry]) -> QuerySet[CostEntry]:
        if self.value():
            return queryset.filter(**{self.parameter_name: self.value()})
        return queryset


class ModelFilter(LedgerValueFilter):
    title = "model"
    parameter_name = "model"


class ServiceFilter(LedgerValueFilter):
    title = "service"
    parameter_name = "service"


class JobFilter(LedgerValueFilter):
    title = "job (batch)"
    parameter_name = "job"
    recent_days = 31
    most = 20
    newest_first = True


def filtered_totals(queryset: QuerySet[CostEntry]) -> list[dict[str, Any]]:
    """[{currency, total, entries}] of the entries `queryset` selects: one aggregate query, exact Decimal."""
    rows = (
        queryset.order_by()
        .values("currency")
        .annotate(total=Sum("amount", output_field=MoneyField()), entries=Count("pk"))
        .order_by("currency")
    )
    return [{**row, "total": row["total"] if row["total"] is not None else Decimal(0)} for row in rows]


def total_words(value: Decimal, currency: str) -> str:
    """A sum of entries to the cent; a sum under a cent to the places it needs (up to 6)."""
    cents = value.quantize(Decimal("0.01"))
    if cents == 0 and value != 0:
        return format_money(value.quantize(Decimal("0.000001")), currency)
    return format_money(cents, currency)


class CorrectAmountForm(forms.Form):
    amount = forms.CharField(
        label="Corrected total",
        max_length=50,
        help_text="What the entry really cost, in the entry's currency (e.g. 0.0042). "
        "The difference from the current total is recorded as a new entry.",
    )
    note = forms.CharField(
        label="Note", max_length=500, widget=forms.Textarea(attrs={"rows": 3}), help_text="Why it is corrected."
    )
    # Makes a resubmitted form (double click, browser back) record the correction once.
    token = forms.RegexField(regex=re.compile(r"^[0-9a-f]{32}$"), widget=forms.HiddenInput)


class RollupCurrencyFilter(admin.SimpleListFilter):
    """Currencies (of the rollups and of the ledger) from the global scope's rows (every entry counts
    there), not a DISTINCT over all rollups or the ledger; a team member's from their teams' team:NAME
    rows (every entry of the team counts there). A currency given in the URL is offered, and filters."""

    title = "currency"
    parameter_name = "currency"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> Iterable[tuple[str, str]]:
        if sees_every_team(request):
            totals = SpendRollup.objects.filter(scope="global")
        else:
            names = user_teams(request).values_list("name", flat=True)
            totals = SpendRollup.objects.filter(scope__in=[team_scope(name) for name in names])
        currencies = set(totals.values_list("currency", flat=True).distinct().order_by())
        if self.value():
            currencies.add(self.value())
        return [(currency, currency) for currency in sorted(currencies)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(currency=self.value())
        return queryset


FOCUS_ADMIN_DAYS = 31  # the longest range the admin's FOCUS download covers


class FocusExportForm(forms.Form):
    start = forms.DateField(label="From (UTC day)", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To (UTC day, included)", widget=forms.DateInput(attrs={"type": "date"}))
    format = forms.ChoiceField(choices=[("csv", "CSV"), ("parquet", "Parquet")], initial="csv")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        today = timezone.now().date()
        self.fields["start"].initial = today.replace(day=1)
        self.fields["end"].initial = today - timedelta(days=1) if today.day > 1 else today

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            self.add_error("end", f"must be on or after {start}")
        elif start and end and end - start >= timedelta(days=FOCUS_ADMIN_DAYS):
            # A web request has WEB_TIMEOUT seconds; a large ledger's long range is the command's or the daily files'.
            self.add_error(
                "end",
                f"the admin exports at most {FOCUS_ADMIN_DAYS} days at a time: for a longer range use "
                "manage.py export_focus, or the daily files of FOCUS_EXPORT_DIR",
            )
        return data


@admin.register(CostEntry)
class CostEntryAdmin(TeamScopedAdminMixin, admin.ModelAdmin):
    # At 1440 px, beside the filters: when, what (model, provider, operation), who (service, subject,
    # job), the amount, how it was priced and how the call went. Long values wrap (change_list.html).
    list_display = (
        "occurred_at",
        "what",
        "who",
        "amount_display",
        "pricing_shown",
        "outcome_shown",
        "corrects_link",
    )
    list_filter = (
        ("occurred_at", OccurredAtFilter),
        ProviderFilter,
        ModelFilter,
        ServiceFilter,
        JobFilter,
        team_list_filter("team"),
        "pricing_status",
        "outcome",
        "is_estimate",
        "aggregated",
        ReportedCostFilter,
        RollupCurrencyFilter,
        ScopeFilter,
    )
    search_fields = ("model", "service", "subject", "job", "idempotency_key")
    list_select_related = ("team", "corrects")
    # No date_hierarchy: it runs a DISTINCT over the whole ledger's dates on every page load.
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = LIST_PER_PAGE
    raw_id_fields = ("team", "corrects")
    actions = ("correct_amount", "export_csv")
    change_list_template = "admin/tracking/costentry/change_list.html"
    fieldsets = (
        (None, {"fields": ("occurred_at", "recorded_at", "provider", "model", "operation_shown", "variant")}),
        ("Who", {"fields": ("service", "subject", "job_link", "team", "tags_table")}),
        (
            "Cost",
            {
                "fields": (
                    "amount_detail",
                    "reported_shown",
                    "pricing_status",
                    "is_estimate",
                    "service_tier_display",
                    "region",
                    "speed",
                    "provenance",
                    "current_total",
                    "corrections_list",
                    "corrects",
                    "note",
                )
            },
        ),
        ("Quantities", {"fields": ("quantities",)}),
        ("Call", {"fields": ("outcome", "aggregated", "duration_shown", "idempotency_key")}),
    )

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """The list, with the total of the entries its filters select above it. A parameter that is not
        what it should be (another page's link gone wrong) is answered 400, naming it."""
        errors = entry_filter_errors(request.GET)
        if errors:
            context = {
                **self.admin_site.each_context(request),
                "title": "These cost entries cannot be listed",
                "opts": self.opts,
                "errors": errors,
                "list_url": reverse("admin:tracking_costentry_changelist"),
            }
            return TemplateResponse(request, "admin/tracking/costentry/bad_filter.html", context, status=400)
        extra_context = {**(extra_context or {}), "has_focus_export": self.has_export_permission(request)}
        response = super().changelist_view(request, extra_context)
        cl = getattr(response, "context_data", None) and response.context_data.get("cl")
        if cl is not None:
            # The total of the whole unfiltered ledger is the dashboard's (from rollups): summing it
            # here would read every entry on each page load.
            filtered = cl.has_active_filters or bool(cl.query)
            response.context_data["entry_totals"] = filtered_totals(cl.queryset) if filtered else None
            response.context_data["entry_total_words"] = [
                {
                    **row,
                    "words": total_words(row["total"], row["currency"]),
                    "count": f"{row['entries']:,} entr{'y' if row['entries'] == 1 else 'ies'}",
                }
                for row in response.context_data["entry_totals"] or ()
            ]
        return response

    @admin.display(description="model", ordering="model")
    def what(self, obj: CostEntry) -> str:
        return format_html(
            '{}<div class="cc-sub">{} · {}</div>', obj.model, obj.provider, operation_words(obj.operation)
        )

    @admin.display(description="service / subject", ordering="service")
    def who(self, obj: CostEntry) -> str:
        lines = [obj.service or EMPTY]
        if obj.subject:
            lines.append(format_html('<div class="cc-sub">{}</div>', obj.subject))
        if obj.job:
            lines.append(format_html('<div class="cc-sub">job {}</div>', obj.job))
        return format_html_join("", "{}", ((line,) for line in lines))

    @admin.display(description="pricing", ordering="pricing_status")
    def pricing_shown(self, obj: CostEntry) -> str:
        words = {"priced": "catalog", "explicit": "given", "unpriced": "unpriced"}
        css = "cc-bad" if obj.pricing_status == "unpriced" else ""
        return format_html(
            '<span class="{}" title="{}">{}</span>',
            css,
            obj.get_pricing_status_display(),
            words.get(obj.pricing_status, obj.pricing_status),
        )

    @admin.display(description="outcome", ordering="outcome")
    def outcome_shown(self, obj: CostEntry) -> str:
        css = "" if obj.outcome == "success" else "cc-bad"
        many = _sub("many calls (aggregated)") if obj.aggregated else ""
        return format_html('<span class="{}">{}</span>{}', css, obj.get_outcome_display(), many)

    @admin.display(description="operation")
    def operation_shown(self, obj: CostEntry) -> str:
        return operation_words(obj.operation)

    @admin.display(description="job")
    def job_link(self, obj: CostEntry) -> str:
        if not obj.job:
            return EMPTY
        return format_html('{} (<a href="{}">its entries</a>)', obj.job, entries_url(job=obj.job))

    @admin.display(description="duration")
    def duration_shown(self, obj: CostEntry) -> str:
        return EMPTY if obj.duration_ms is None else f"{obj.duration_ms:,} ms"

    # Append-only: viewing is the only permission; the database refuses UPDATEs anyway.
    # With no change permission Django renders every field read-only without save buttons
    # and answers a POST to the change page with 403.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CostEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: CostEntry | None = None) -> bool:
        return False

    def has_correct_permission(self, request: HttpRequest) -> bool:
        """Correcting appends an entry; it needs the model's change permission as granted to the user."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj: CostEntry) -> str:
        # Whether it is an estimate (computed here) or invoiced, under it.
        # A sender's cost that disagrees with ours shows in the list too; one that agrees only on the page.
        differs = (
            format_html(
                '<div class="cc-sub cc-bad" style="text-align:right">{} says {}</div>',
                obj.reported_by or "sender",
                format_money_fine(obj.reported_amount, obj.currency),
            )
            if obj.reported_differs
            else ""
        )
        return format_html(
            '{}<div class="cc-sub" style="text-align:right">{}</div>{}',
            _right(money_fine(obj.amount, obj.currency)),
            "estimate" if obj.is_estimate else "invoiced",
            differs,
        )

    @admin.display(description="amount")
    def amount_detail(self, obj: CostEntry) -> str:
        return money_fine(obj.amount, obj.currency)

    @admin.display(description="reported cost")
    def reported_shown(self, obj: CostEntry) -> str:
        """The sender's own figure beside ours: a cross-check, never the amount."""
        if obj.reported_amount is None:
            return "none (the sender reported no cost of its own)"
        shown = money_fine(obj.reported_amount, obj.currency)
        by = obj.reported_by or "the sender"
        if not obj.reported_differs:
            return format_html("{} by {}: agrees with the amount", shown, by)
        difference = obj.reported_amount - obj.amount
        share = f" ({difference / obj.amount:+.1%} of ours)" if obj.amount else ""
        return format_html(
            '{} by {}: <span class="cc-bad">differs from the amount by {}{}</span>. The amount is ours, from the '
            "catalog's prices; check the prices used below, or the sender's price list.",
            shown,
            by,
            format_money_fine(difference, obj.currency),
            share,
        )

    @admin.display(description="corrects", ordering="corrects")
    def corrects_link(self, obj: CostEntry) -> str:
        if obj.corrects_id is None:
            return EMPTY
        return format_html('<a href="{}">#{}</a>', _change_url(obj.corrects), obj.corrects_id)

    @admin.display(description="tags")
    def tags_table(self, obj: CostEntry) -> str:
        if not obj.tags:
            return EMPTY
        return format_html(
            '<table class="cc-tags"><thead><tr><th>tag</th><th>value</th></tr></thead><tbody>{}</tbody></table>',
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", sorted((obj.tags or {}).items())),
        )

    @admin.display(description="service tier")
    def service_tier_display(self, obj: CostEntry) -> str:
        return service_tier_words(obj.service_tier)

    @admin.display(description="quantities")
    def quantities(self, obj: CostEntry) -> str:
        """The quantities the event had (29 columns, most of them 0 for any one call)."""
        shown = quantity_lines(obj)
        if not shown:
            return "none"
        return format_html(
            '<table class="quantities">{}</table>',
            format_html_join("", '<tr><td>{}</td><td style="text-align:right">{}</td></tr>', shown),
        )

    @admin.display(description="how it was priced")
    def provenance(self, obj: CostEntry) -> str:
        """The prices used, as a table: a row per priced part (quantity x unit price = amount, and the
        price version), or the sentence saying why the entry was not priced from the catalog."""
        lines = provenance_lines(obj)
        if not lines:
            return EMPTY
        if not any(line.part for line in lines):
            return format_html_join("", '<p class="cc-provenance">{}</p>', ((line.text,) for line in lines))
        rows = format_html_join(
            "",
            '<tr title="{}"><td>{}</td><td class="cc-num">{}</td><td>{}</td><td class="cc-num">{}</td><td>{}</td></tr>',
            (
                (
                    line.text,
                    line.part or line.text,
                    line.quantity,
                    line.unit_price,
                    line.amount,
                    format_html(
                        '<a href="{}">price #{}</a>',
                        reverse("admin:tracking_price_change", args=[line.price_id]),
                        line.price_id,
                    )
                    if line.price_id is not None
                    else "",
                )
                for line in lines
            ),
        )
        total = format_html(
            '<tr class="cc-total-row"><th scope="row">total</th><td></td><td></td>'
            '<td class="cc-num" title="{} exactly">{}</td><td></td></tr>',
            format_money(obj.amount, obj.currency),
            format_money_fine(obj.amount, obj.currency),
        )
        return format_html(
            '<table class="cc-provenance"><thead><tr><th>part</th><th>quantity</th><th>unit price</th>'
            "<th>amount</th><th>price version</th></tr></thead><tbody>{}{}</tbody></table>",
            rows,
            total,
        )

    def _corrections(self, obj: CostEntry) -> list[CostEntry]:
        # The change page shows both the list and the total: one query for the two.
        if not hasattr(obj, "_admin_corrections"):
            obj._admin_corrections = list(obj.corrections.order_by("recorded_at", "pk"))  # type: ignore[attr-defined]
        return obj._admin_corrections  # type: ignore[attr-defined]

    @admin.display(description="current total")
    def current_total(self, obj: CostEntry) -> str:
        if obj.corrects_id is not None:
            return format_html(
                'This entry corrects <a href="{}">#{}</a>; see the total there.',
                _change_url(obj.corrects),
                obj.corrects_id,
            )
        total = obj.amount + sum((c.amount for c in self._corrections(obj)), Decimal(0))
        return money_fine(total, obj.currency)

    @admin.display(description="corrections")
    def corrections_list(self, obj: CostEntry) -> str:
        corrections = self._corrections(obj) if obj.corrects_id is None else []
        if not corrections:
            return EMPTY
        items = format_html_join(
            "",
            '<li><a href="{}">#{}</a> {} on {}: {}</li>',
            (
                (
                    _change_url(c),
                    c.pk,
                    f"{'+' if c.amount >= 0 else ''}{format_money_fine(c.amount, c.currency)}",
                    f"{timezone.localtime(c.recorded_at):%Y-%m-%d %H:%M}",
                    c.note,
                )
                for c in corrections
            ),
        )
        return format_html('<ul style="margin-left:0;padding-left:1.2em">{}</ul>', items)

    def get_urls(self) -> list[Any]:
        focus = path("focus/", self.admin_site.admin_view(self.focus_view), name="tracking_costentry_focus")
        return [focus, *super().get_urls()]

    def focus_view(self, request: HttpRequest) -> HttpResponse:
        """The FOCUS 1.2 export of a range of days, of the entries the viewer may see (their teams' only,
        unless a superuser): a form, then the file (CSV streamed, Parquet written then sent)."""
        if not self.has_export_permission(request):
            raise PermissionDenied
        form = FocusExportForm(request.GET if "start" in request.GET else None)
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            start, end = data["start"], data["end"] + timedelta(days=1)
            entries = self.get_queryset(request)
            name = f"focus-{data['start']:%Y%m%d}-{data['end']:%Y%m%d}.{data['format']}"
            if data["format"] == "csv":
                response: HttpResponse = StreamingHttpResponse(
                    focus_csv_lines(start, end, entries), content_type="text/csv; charset=utf-8"
                )
            else:
                with tempfile.TemporaryDirectory() as folder:
                    path = Path(folder) / name
                    focus_export_write(path, start, end, "parquet", entries)
                    response = HttpResponse(path.read_bytes(), content_type="application/vnd.apache.parquet")
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        context = {
            **self.admin_site.each_context(request),
            "title": "Export cost and usage as FOCUS 1.2",
            "opts": self.opts,
            "form": form,
            "teams_only": not sees_every_team(request),
        }
        return TemplateResponse(
            request, "admin/tracking/costentry/focus.html", context, status=400 if form.is_bound else 200
        )

    def has_export_permission(self, request: HttpRequest) -> bool:
        """Bulk export of the ledger is the cost dashboard's business: it needs analytics.view_dashboard."""
        return request.user.has_perm("analytics.view_dashboard")

    @admin.action(description="Export selected cost entries as CSV", permissions=["export"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[CostEntry]) -> HttpResponse:
        """Streamed row by row ("select all" exports every entry the filters match, in chunks)."""
        from core.csv import csv_response

        columns = [
            "id", "occurred_at", "recorded_at", "provider", "model", "operation", "variant", "service", "subject",
            "job", "team", "tags", *QUANTITY_FIELDS, "amount", "currency", "pricing_status", "is_estimate",
            "outcome", "duration_ms", "idempotency_key", "corrects", "note",
        ]  # fmt: skip

        def rows() -> Iterable[list[Any]]:
            yield columns
            entries = queryset.select_related("team").order_by("occurred_at", "pk")
            for e in entries.iterator(chunk_size=2000):
                yield [
                    e.pk, e.occurred_at, e.recorded_at, e.provider, e.model, e.operation, e.variant, e.service,
                    e.subject, e.job, e.team.name if e.team else "", json.dumps(e.tags, sort_keys=True),
                    *(getattr(e, name) for name in QUANTITY_FIELDS), e.amount, e.currency, e.pricing_status,
                    e.is_estimate, e.outcome, e.duration_ms, e.idempotency_key, e.corrects_id, e.note,
                ]  # fmt: skip

        return csv_response(filename=f"cost-entries-{timezone.now():%Y%m%dT%H%M%S}.csv", rows=rows())

    @admin.action(description="Correct the amount", permissions=["correct"])
    def correct_amount(self, request: HttpRequest, queryset: QuerySet[CostEntry]) -> HttpResponse | None:
        """Ask for the corrected total and a note, then append a correcting entry (cost_entry_correct)."""
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(request, "Select exactly one entry to correct.", messages.ERROR)
            return None
        entry = selected[0]
        original = entry.corrects if entry.corrects_id is not None else entry

        if "apply" in request.POST:
            form = CorrectAmountForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    result = cost_entry_correct(
                        entry=entry,
                        amount=data["amount"],
                        note=data["note"],
                        idempotency_key=f"correction:{original.pk}:{data['token']}",
                    )
                except ValidationError as exc:
                    # The service validated before writing: nothing was recorded. Show the form again.
                    self.message_user(request, f"Not corrected: {_describe(exc)}", messages.ERROR)
                else:
                    correction = result.entry
                    total = original.amount + sum((c.amount for c in original.corrections.all()), Decimal(0))
                    if result.created:
                        self.log_addition(request, correction, f"Corrected entry #{original.pk}: {data['note']}")
                        self.message_user(
                            request,
                            f"Entry #{original.pk} corrected: new total {format_money(total, original.currency)} "
                            f"(correction #{correction.pk}).",
                            messages.SUCCESS,
                        )
                    else:
                        self.message_user(
                            request,
                            f"This correction was already recorded (correction #{correction.pk}); "
                            f"entry #{original.pk} totals {format_money(total, original.currency)}.",
                            messages.WARNING,
                        )
                    return None
        else:
            form = CorrectAmountForm(initial={"token": uuid.uuid4().hex})

        current = original.amount + sum((c.amount for c in original.corrections.all()), Decimal(0))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Correct the amount of entry #{original.pk}",
            "opts": self.opts,
            "entry": entry,
            "original": original,
            "current_total": format_money(current, original.currency),
            "form": form,
            "action_name": "correct_amount",
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/tracking/costentry/correct.html", context)


# --- rollups -------------------------------------------------------------------------------


def rollup_scopes_seen_by(request: HttpRequest) -> Q:
    """The rollup scopes a user may read (the rollup admin, the budget form's scope hints): every
    one for a superuser; for other staff their teams' copies only (team:NAME and team:NAME/...),
    never the organisation's scopes, which count every team's spend."""
    if sees_every_team(request):
        return Q()
    return team_scopes_filter(user_teams(request).values_list("name", flat=True))


@admin.register(SpendRollup)
class SpendRollupAdmin(admin.ModelAdmin):
    # At 1440 px beside the filters: the amount carries its currency; errors, rate-limited and unpriced
    # calls go under the count of events (where there are any).
    list_display = ("scope", "hour", "amount_display", "events_shown", "tokens")
    list_filter = (RollupCurrencyFilter,)
    search_fields = ("scope",)
    ordering = ("-bucket", "scope", "currency")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = LIST_PER_PAGE
    fieldsets = (
        (None, {"fields": ("scope", "bucket", "currency", "amount_display")}),
        ("Events", {"fields": ("events", "errors", "rate_limited", "unpriced")}),
        ("Tokens", {"fields": TOKEN_FIELDS}),
    )

    # Derived from the ledger in the entry's own transaction; rebuilt with `rebuild_rollups`.
    def get_queryset(self, request: HttpRequest) -> QuerySet[SpendRollup]:
        # A team member's rows are their teams' scopes (change list, search, change page by URL).
        return super().get_queryset(request).filter(rollup_scopes_seen_by(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SpendRollup | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SpendRollup | None = None) -> bool:
        return False

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj: SpendRollup) -> str:
        # A sum of entries, as the cost entry list totals them: to the cent (under a cent: 6 places).
        return _right(_exactly(total_words(obj.amount, obj.currency), obj.amount, obj.currency))

    @admin.display(description="hour", ordering="bucket")
    def hour(self, obj: SpendRollup) -> datetime:
        return obj.bucket

    @admin.display(description="events", ordering="events")
    def events_shown(self, obj: SpendRollup) -> str:
        counts = ((obj.errors, "failed"), (obj.rate_limited, "rate limited"), (obj.unpriced, "unpriced"))
        notes = ", ".join(f"{count:,} {words}" for count, words in counts if count)
        bad = format_html('<span class="cc-sub cc-bad">{}</span>', notes) if notes else ""
        return format_html("{}{}", _right(f"{obj.events:,}"), bad)

    @admin.display(description="tokens")
    def tokens(self, obj: SpendRollup) -> str:
        return _right(f"{sum(getattr(obj, name) for name in TOKEN_FIELDS):,}")


# --- batches ---------------------------------------------------------------------------------------


def _per_lead(value: Decimal | None) -> str:
    """A cost per lead is a unit cost: to the places it needs, up to 6 (0.012352 USD)."""
    return f"undefined (no {lead_unit()}s)" if value is None else format_money_fine(value, "USD")


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    """Batches are opened and closed from code and the command line; here they are read (the note
    can be edited), with a trend of cost per lead over the last finished batches."""

    # At 1440 px beside the filters: the job under the pipeline, how long it ran under when it started,
    # the link to its cost entries under its cost, the month's cost and leads under its cost per lead.
    list_display = (
        "batch_shown",
        "started_shown",
        "leads_shown",
        "cost_shown",
        "per_lead_shown",
        "month_per_lead_shown",
    )
    list_display_links = ("batch_shown",)
    list_filter = ("name", ("finished_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "job", "note")
    date_hierarchy = "started_at"
    fieldsets = (
        (None, {"fields": ("name", "job", "service", "note", "entries_link")}),
        ("Run", {"fields": ("started_at", "finished_at", "duration", "leads_detail")}),
        (
            "Cost",
            {
                "fields": (
                    "cost_detail",
                    "per_lead_detail",
                    "month_cost_detail",
                    "month_leads_detail",
                    "month_per_lead_detail",
                    "cost_computed_at",
                )
            },
        ),
    )
    # Everything on the page but the note is read-only (a batch's figures are computed).
    readonly_fields = tuple(name for _, section in fieldsets for name in section["fields"] if name != "note")
    change_list_template = "admin/tracking/batch/change_list.html"
    TREND_BATCHES = 30

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Batch]:
        """A batch carries no team: a staff member who is not a superuser sees the batches whose job
        charged cost entries to one of their teams."""
        queryset = super().get_queryset(request)
        if sees_every_team(request):
            return queryset
        return queryset.filter(exists_for_teams(request, CostEntry, outer_field="job", inner_field="job"))

    @admin.display(description="duration")
    def duration(self, obj: Batch) -> str:
        text = duration_words(((obj.finished_at or timezone.now()) - obj.started_at).total_seconds())
        return text if obj.finished_at else f"{text} (running)"

    @admin.display(description="pipeline", ordering="name")
    def batch_shown(self, obj: Batch) -> str:
        return format_html("{}{}", obj.name, _sub(f"job {obj.job}"))

    @admin.display(description="started", ordering="started_at")
    def started_shown(self, obj: Batch) -> str:
        started = f"{timezone.localtime(obj.started_at):%Y-%m-%d %H:%M}"
        return format_html("{}{}", started, _sub(self.duration(obj)))

    @admin.display(description="leads", ordering="leads")
    def leads_shown(self, obj: Batch) -> str:
        return _right(EMPTY if obj.leads is None else f"{obj.leads:,}")

    @admin.display(description="leads")
    def leads_detail(self, obj: Batch) -> str:
        return EMPTY if obj.leads is None else f"{obj.leads:,}"

    @admin.display(description="cost", ordering="cost")
    def cost_shown(self, obj: Batch) -> str:
        entries = format_html(
            '<span class="cc-sub"><a href="{}" title="the cost entries of job {}">its entries</a></span>',
            entries_url(job=obj.job),
            obj.job,
        )
        return format_html("{}{}", _right(self.cost_detail(obj)), entries)

    @admin.display(description="cost")
    def cost_detail(self, obj: Batch) -> str:
        return EMPTY if obj.cost is None else _exactly(total_words(obj.cost, "USD"), obj.cost, "USD")

    @admin.display(description="cost per lead", ordering="cost_per_lead")
    def per_lead_shown(self, obj: Batch) -> str:
        return _right(self.per_lead_detail(obj))

    @admin.display(description="cost per lead")
    def per_lead_detail(self, obj: Batch) -> str:
        return EMPTY if obj.cost_computed_at is None else _per_lead(obj.cost_per_lead)

    @admin.display(description="month to date per lead", ordering="month_cost_per_lead")
    def month_per_lead_shown(self, obj: Batch) -> str:
        if obj.cost_computed_at is None:
            return _right(EMPTY)
        # As tracking.batches.month_to_date defines it: the whole month's spend over its leads.
        month = format_html(
            "all spend {} / {} {}s", self.month_cost_detail(obj), self.month_leads_detail(obj), lead_unit()
        )
        return format_html("{}{}", _right(_per_lead(obj.month_cost_per_lead)), _sub(month))

    @admin.display(description="month-to-date spend (all of it)")
    def month_cost_detail(self, obj: Batch) -> str:
        if obj.month_cost is None:
            return EMPTY
        return _exactly(total_words(obj.month_cost, "USD"), obj.month_cost, "USD")

    @admin.display(description="month-to-date leads")
    def month_leads_detail(self, obj: Batch) -> str:
        return EMPTY if obj.month_leads is None else f"{obj.month_leads:,}"

    @admin.display(description="month-to-date cost per lead")
    def month_per_lead_detail(self, obj: Batch) -> str:
        return EMPTY if obj.cost_computed_at is None else _per_lead(obj.month_cost_per_lead)

    @admin.display(description="cost entries")
    def entries_link(self, obj: Batch) -> str:
        """The entries charged to the batch's job (a team member sees their teams' among them)."""
        return format_html('<a href="{}">entries of job {}</a>', entries_url(job=obj.job), obj.job)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        recent = list(
            self.get_queryset(request)
            .filter(cost_computed_at__isnull=False)
            .order_by("-finished_at")[: self.TREND_BATCHES]
        )
        extra_context = {**(extra_context or {}), "cpl_trend": cost_per_lead_trend(recent[::-1])}
        return super().changelist_view(request, extra_context)


def cost_per_lead_trend(batches: list[Batch]) -> dict[str, Any]:
    """The batch list's chart (drawn by Chart.js in admin/tracking/batch/change_list.html): the cost per
    lead and the month-to-date cost per lead of the given finished batches, oldest first. Amounts travel
    as decimal strings with their words (the tooltips); a batch without leads is a gap in the line."""
    unit = lead_unit()

    def series(label: str, values: list[Decimal | None]) -> dict[str, Any]:
        return {
            "label": label,
            "data": [None if v is None else str(v) for v in values],
            "text": [_per_lead(v) for v in values],
        }

    finished = [b for b in batches if b.finished_at is not None]
    return {
        "labels": [f"{timezone.localtime(b.finished_at):%Y-%m-%d %H:%M}" for b in finished],  # type: ignore[arg-type]
        "names": [f"{b.name} ({b.job})" for b in finished],
        "series": [
            series(f"cost per {unit}", [b.cost_per_lead for b in finished]),
            series(f"month to date per {unit}", [b.month_cost_per_lead for b in finished]),
        ],
        "undefined": sum(1 for b in finished if b.cost_per_lead is None),
        # Something to draw: a batch with a cost per lead or a month to date per lead.
        "drawn": any(v is not None for b in finished for v in (b.cost_per_lead, b.month_cost_per_lead)),
        "unit": unit,
    }


from . import admin_billing, admin_gpu  # noqa: E402, F401  (billing sources, days and lines; GPU devices, samples, settings)
