from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"
    verbose_name = "Analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Alert rules of metric "anomaly" score with analytics' anomalies; alerts sits below analytics
        # and imports nothing of it, so the reader is handed over here.
        from alerts.evaluation import anomaly_reader_set

        from .selectors import anomaly_summaries

        anomaly_reader_set(anomaly_summaries)
