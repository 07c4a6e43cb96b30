"""API keys in the admin: created here, the key is shown once on the page that answers the save (never in
a message: Django's messages travel in a signed, not encrypted, cookie); revoke with an action."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.cache import add_never_cache_headers

from core.teams import TeamScopedAdminMixin, team_list_filter

from .keys import api_key_issue, api_key_revoke
from .models import ApiKey


class ApiKeyForm(forms.ModelForm):
    scopes = forms.CharField(
        required=False,
        help_text="Comma-separated budget/spend scopes the key may use, e.g. service:image-api, global. "
        "Empty: any scope.",
        widget=forms.TextInput(attrs={"size": 80}),
    )

    class Meta:
        model = ApiKey
        fields = ("name", "service", "team", "scopes", "can_manage_budgets", "rate_limit_per_minute", "expires_at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance and self.instance.pk:
            self.initial["scopes"] = ", ".join(self.instance.scopes or [])

    def clean_scopes(self) -> list[str]:
        # Each scope is checked by ApiKey.clean, the same check `manage.py api_key create` gets.
        return [s.strip() for s in (self.cleaned_data.get("scopes") or "").split(",") if s.strip()]


@admin.register(ApiKey)
class ApiKeyAdmin(TeamScopedAdminMixin, admin.ModelAdmin):
    # A team's staff list, create and revoke their team's keys (a key they create has their team);
    # organisation-wide keys are the superusers'.
    form = ApiKeyForm
    # At 1440 px: when it was created is on the key's page; when it was last used says more here.
    # Whether it may manage budgets: on its page and as a filter.
    list_display = (
        "name",
        "service",
        "team",
        "key_prefix",
        "scopes_shown",
        "state",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("service", team_list_filter("team"), "can_manage_budgets")
    list_select_related = ("team",)
    search_fields = ("name", "service", "prefix")
    readonly_fields = ("key_prefix", "created_at", "revoked_at", "last_used_at")
    actions = ("revoke",)

    @admin.display(description="key")
    def key_prefix(self, obj: ApiKey) -> str:
        return f"cc_{obj.prefix}_…" if obj.prefix else "(shown once, after saving)"

    @admin.display(description="scopes")
    def scopes_shown(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes) if obj.scopes else "any"

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at:
            return "revoked"
        if obj.expires_at and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = api_key_issue(name=obj.name, service=obj.service, key=obj)
        request.issued_api_key = issued.plaintext  # type: ignore[attr-defined]  # for response_add only

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        """The key, once, in this response's body: not in a message, not in a redirect, not cached."""
        context = {
            **self.admin_site.each_context(request),
            "title": f"API key {obj.name} created",
            "opts": self.opts,
            "key": obj,
            "plaintext": request.issued_api_key,  # type: ignore[attr-defined]
        }
        response = TemplateResponse(request, "admin/api/apikey/issued.html", context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke (requests with it get 401 from now on)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        done = sum(api_key_revoke(key=key) for key in queryset)
        self.message_user(request, f"{done} key(s) revoked.", messages.SUCCESS)
