from django.contrib import admin
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.generic import RedirectView

from api import otlp, otlp_metrics
from api.api import api


def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers and compose health checks: the process answers and reaches its database
    (503 + Retry-After while the database is down, so traffic goes to an instance that can serve it)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        response = JsonResponse({"status": "unavailable", "database": exc.__class__.__name__}, status=503)
        response["Retry-After"] = "5"
        return response
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
    path("v1/traces", otlp.traces, name="otlp-traces"),  # OTLP/HTTP: OTEL_EXPORTER_OTLP_ENDPOINT is the site root
    path("v1/metrics", otlp_metrics.metrics, name="otlp-metrics"),
]
