"""The providers' bills in the admin: billing sources (admin keys write-only, "Pull now", CSV upload), the
import status of each day, and the billed lines. Organisation-level data: superusers only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from core.money import format_money_fine

from .billing import CSV_OPTIONAL, CSV_REQUIRED, BillingError, billing_key_set, bills_import_csv, bills_pull
from .models import BilledCost, BillingDay, BillingSource


class SuperusersOnlyMixin:
    """Every page and action of the model for active superusers only, whatever the model permissions say."""

    def _superuser(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._superuser(request)


class ReadOnlyMixin(SuperusersOnlyMixin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class BillingSourceForm(forms.ModelForm):
    admin_key = forms.CharField(
        label="Admin key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The provider's admin key (OpenAI: an admin key of the organization; Anthropic: sk-ant-admin...). "
        "Stored encrypted and never shown again; leave empty to keep the stored one.",
    )
    api_url = forms.URLField(
        label="API address",
        required=False,
        assume_scheme="https",
        help_text="Empty: the provider's own API (https://api.openai.com, https://api.anthropic.com).",
    )
    clear_admin_key = forms.BooleanField(label="Forget the stored admin key", required=False)

    class Meta:
        model = BillingSource
        fields = ("name", "kind", "provider", "api_url", "admin_key_file", "enabled", "days_back")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind, key, key_file = data.get("kind"), data.get("admin_key"), data.get("admin_key_file")
        if key and data.get("clear_admin_key"):
            self.add_error("admin_key", "Enter a new key or forget the stored one, not both.")
        if key and key_file:
            self.add_error("admin_key", "The key file is read instead of a stored key: give one of them.")
        stored = bool(self.instance.admin_key_encrypted) and not data.get("clear_admin_key")
        if kind in (BillingSource.Kind.OPENAI, BillingSource.Kind.ANTHROPIC) and not (key or key_file or stored):
            self.add_error("admin_key", "A cost API needs an admin key: enter it, or name a file holding it.")
        if kind == BillingSource.Kind.CSV and key:
            self.add_error("admin_key", "A CSV source is uploaded, not pulled: it needs no key.")
        return data


class CsvUploadForm(forms.Form):
    file = forms.FileField(label="CSV file", help_text=f"Columns {', '.join(CSV_REQUIRED + CSV_OPTIONAL)}.")


@admin.register(BillingSource)
class BillingSourceAdmin(SuperusersOnlyMixin, admin.ModelAdmin):
    form = BillingSourceForm
    list_display = ("name", "kind", "provider", "pulled", "last_attempt_at", "last_success_at", "last_error_shown")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "provider")
    actions = ["pull_now"]
    readonly_fields = ("key_status", "upload_link", "last_attempt_at", "last_success_at", "last_error")

    def get_fieldsets(self, request: HttpRequest, obj: BillingSource | None = None) -> Any:
        return [
            (None, {"fields": ("name", "kind", "provider", "enabled", "days_back")}),
            (
                "Admin key",
                {
                    "fields": ("key_status", "admin_key", "clear_admin_key", "admin_key_file", "api_url"),
                    "description": "Cost APIs only. The key is write-only: it is never displayed.",
                },
            ),
            ("Imports", {"fields": ("upload_link", "last_attempt_at", "last_success_at", "last_error")}),
        ]

    @admin.display(description="stored key")
    def key_status(self, obj: BillingSource | None) -> str:
        if obj is not None and obj.admin_key_file:
            return f"read from {obj.admin_key_file} at each pull"
        return "a key is stored" if obj is not None and obj.admin_key_encrypted else "no key stored"

    @admin.display(description="CSV upload")
    def upload_link(self, obj: BillingSource | None) -> str:
        if obj is None or obj.pk is None or obj.kind != BillingSource.Kind.CSV:
            return "CSV sources only"
        url = reverse("admin:tracking_billingsource_upload", args=[obj.pk])
        return format_html('<a href="{}">Upload invoice lines (CSV)</a>', url)

    @admin.display(description="pulled daily", ordering="enabled")
    def pulled(self, obj: BillingSource) -> str:
        """A CSV source is uploaded, never pulled: no yes or no for it."""
        if obj.kind == BillingSource.Kind.CSV:
            return "uploaded"
        return "yes" if obj.enabled else "no (paused)"

    @admin.display(description="last error")
    def last_error_shown(self, obj: BillingSource) -> str:
        return obj.last_error[:120] + ("…" if len(obj.last_error) > 120 else "") if obj.last_error else "-"

    def save_model(self, request: HttpRequest, obj: BillingSource, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("clear_admin_key") or form.cleaned_data.get("admin_key_file"):
            billing_key_set(obj, "")
        if form.cleaned_data.get("admin_key"):
            billing_key_set(obj, form.cleaned_data["admin_key"])

    @admin.action(description="Pull now (the last closed days and the days that failed)")
    def pull_now(self, request: HttpRequest, queryset: QuerySet[BillingSource]) -> None:
        for source in queryset:
            if source.kind == BillingSource.Kind.CSV:
                self.message_user(request, f"{source}: a CSV source is uploaded, not pulled.", messages.WARNING)
                continue
            results = bills_pull(source)
            failed = [result for result in results if not result.ok]
            changed = sum(1 for result in results if result.ok and result.changed)
            if failed:
                text = "; ".join(f"{result.day}: {result.message}" for result in failed[:3])
                self.message_user(
                    request, f"{source}: {len(failed)} of {len(results)} day(s) failed: {text}", messages.ERROR
                )
            else:
                self.message_user(
                    request, f"{source}: {len(results)} day(s) read, {changed} with new lines.", messages.SUCCESS
                )

    def get_urls(self) -> list[Any]:
        upload = path(
            "<int:source_id>/upload/",
            self.admin_site.admin_view(self.upload_view),
            name="tracking_billingsource_upload",
        )
        return [upload, *super().get_urls()]

    def upload_view(self, request: HttpRequest, source_id: int) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        source = get_object_or_404(BillingSource, pk=source_id, kind=BillingSource.Kind.CSV)
        form = CsvUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                results = bills_import_csv(source, form.cleaned_data["file"])
            except BillingError as exc:
                form.add_error("file", f"Nothing was imported: {exc}")
            else:
                changed = sum(1 for result in results if result.changed)
                lines = sum(result.lines for result in results)
                self.message_user(
                    request,
                    f"{source}: {lines} line(s) over {len(results)} day(s); {changed} day(s) replaced, "
                    f"{len(results) - changed} unchanged.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:tracking_billingsource_change", args=[source.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Upload invoice lines: {source}",
            "opts": self.opts,
            "original": source,
            "form": form,
            "required": CSV_REQUIRED,
            "optional": CSV_OPTIONAL,
        }
        status = 400 if form.is_bound and form.errors else 200
        return TemplateResponse(request, "admin/tracking/billingsource/upload.html", context, status=status)


@admin.register(BillingDay)
class BillingDayAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("day", "source", "status", "lines", "message", "attempted_at", "imported_at")
    list_filter = ("status", "source")
    list_select_related = ("source",)
    date_hierarchy = "day"


@admin.register(BilledCost)
class BilledCostAdmin(ReadOnlyMixin, admin.ModelAdmin):
    # At 1440 px beside the filters: the day, what was billed (model, line item, account under it) and how much;
    # the source and provider are filters, when it was imported is on the line's page.
    list_display = ("day", "what", "amount_shown")
    list_filter = ("source", "provider", ("day", admin.DateFieldListFilter))
    list_select_related = ("source",)
    search_fields = ("model", "account", "description")
    date_hierarchy = "day"
    fields = ("source", "day", "provider", "model", "account", "description", "amount_shown", "imported_at")
    readonly_fields = ("amount_shown",)

    @admin.display(description="model / line item", ordering="model")
    def what(self, obj: BilledCost) -> str:
        under = " · ".join(part for part in (obj.provider, obj.description, obj.account) if part)
        return format_html('{}<div class="cc-sub">{}</div>', obj.model or "-", under)

    @admin.display(description="billed", ordering="amount")
    def amount_shown(self, obj: BilledCost) -> str:
        return format_money_fine(obj.amount, obj.currency)
