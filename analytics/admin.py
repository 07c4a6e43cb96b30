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

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from core.csv import csv_response
from core.models import Team
from core.teams import sees_every_team, user_teams

from .dashboard import DashboardData
from .filters import DashboardFilterForm
from .models import Dashboard
from .tables import Table, chart_series


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
            # Every chart draws one of the tables beside it; axes name their units.
            spend = "spend (USD)"
            context["charts"] = {
                "spend_by_provider": chart_series(data.spend_by_provider, x="day", y=spend),
                "top_models": _bars(data.top_models, x="spend in the range (USD)", y="model"),
                "top_subjects": _bars(data.top_subjects, x="spend in the range (USD)", y="subject"),
                "cost_per_lead": chart_series(
                    data.cost_per_lead,
                    columns=[5, 6],
                    x="batch finished",
                    y=f"cost per {settings.LEAD_UNIT_NAME} (USD)",
                ),
                "gpu": chart_series(data.gpu, x="day", y="GPU cost (USD)"),
            }
            if data.bills_shown:
                context["charts"]["bill_drift"] = chart_series(
                    data.bill_drift_days, columns=[1, 2], x="day (UTC)", y="spend (USD)"
                )
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


def _bars(table: Table, *, x: str, y: str) -> dict[str, Any]:
    """A one-dataset bar chart of a (name, spend, ...) table."""
    series = chart_series(table, columns=[1], x=x, y=y)
    series["datasets"][0]["label"] = x
    return series
