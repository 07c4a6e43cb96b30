from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.generic import RedirectView

from api.api import api


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and compose health checks: the process answers."""
    return JsonResponse({"status": "ok"})


admin.site.site_header = "costcontrol"
admin.site.site_title = "costcontrol"
admin.site.index_title = "Spend, budgets and alerts"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("", include("monitoring.urls")),  # /metrics (Prometheus)
    path("api/v1/", api.urls),
]
