"""The cost dashboard in the admin: Analytics > Cost dashboard on the admin index.

Registered as the admin of a table-less model (analytics.Dashboard) so that it lives under the
admin site's own URLs, login and permission checks: staff users with analytics.view_dashboard
(superusers have every permission). Its change list is the dashboard; export/<table>.csv
streams any of its tables as CSV with the same filters.

Whose spend (analytics.dashboard): a superuser views the organisation, or a team they pick; any
other staff member views one of their own teams (their first unless they pick another of theirs),
and a staff member in no team sees no figures, only a sentence saying why.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from core.csv import csv_response
from core.models import Team
from core.teams import sees_every_team, user_teams

from .dashboard import DashboardData, DashboardFilterForm, chart_series
from .models import Dashboard


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        return bool(user.is_active and user.is_staff and user.has_perm("analytics.view_dashboard"))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("", view(self.dashboard_view), name="analytics_dashboard_changelist"),
            path("export/<slug:table>.csv", view(self.export_view), name="analytics_dashboard_export"),
        ]

    def _data(self, request: HttpRequest) -> tuple[DashboardFilterForm | None, DashboardData | None]:
        """The filter form and what it selects; (None, None) for a staff member in no team."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        organisation = sees_every_team(request)
        teams = list((Team.objects.all() if organisation else user_teams(request)).values_list("name", flat=True))
        if not organisation and not teams:
            return None, None
        form = DashboardFilterForm(request.GET, teams=sorted(teams), organisation=organisation)
        if not form.is_valid():
            return form, None
        return form, DashboardData(filters=form.filters())

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        form, data = self._data(request)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Cost dashboard",
            "opts": self.opts,
            "form": form,
            "no_team": form is None,
            "data": data,
            "query": request.GET.urlencode(),
            "export_url": reverse("admin:analytics_dashboard_export", args=["TABLE"]).replace("TABLE.csv", ""),
        }
        if data is not None:
            gpu = data.gpu
            context["charts"] = {
                "spend_by_provider": chart_series(data.spend_by_provider),
                "top_models": _bars(data.top_models.rows),
                "top_subjects": _bars(data.top_subjects.rows),
                "cost_per_lead": {
                    "labels": [r[0] for r in data.cost_per_lead.rows],
                    "datasets": [
                        {"label": "per batch", "data": [r[5] or None for r in data.cost_per_lead.rows]},
                        {"label": "month to date", "data": [r[6] or None for r in data.cost_per_lead.rows]},
                    ],
                },
                "gpu": chart_series(gpu),
            }
        return TemplateResponse(request, "admin/analytics/dashboard/dashboard.html", context)

    def export_view(self, request: HttpRequest, table: str) -> HttpResponse:
        form, data = self._data(request)
        if form is None:
            raise PermissionDenied("you belong to no team: there is no spend to export")
        if data is None:
            raise Http404("invalid filters: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        try:
            exported = data.export_table(table)
        except KeyError:
            raise Http404(f"no dashboard table {table!r}") from None
        f = data.filters
        # Scopes hold team names, services and tag values as recorded: only safe characters go in the header.
        suffix = "" if f.scope == "global" else "-" + re.sub(r"[^A-Za-z0-9._]+", "-", f.scope).strip("-")
        filename = f"costcontrol-{table}-{f.start:%Y%m%d}-{f.end:%Y%m%d}{suffix}.csv"
        return csv_response(filename=filename, rows=exported.csv_rows())


def _bars(rows: list[list[Any]]) -> dict[str, Any]:
    """A one-dataset bar chart of (name, spend) rows."""
    return {"labels": [r[0] for r in rows], "datasets": [{"label": "spend (USD)", "data": [r[1] for r in rows]}]}
