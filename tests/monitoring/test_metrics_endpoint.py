"""GET /metrics: the business metrics every process agrees on, read from the database, and their protection."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest
import time_machine
from django.core.checks import run_checks
from django.db import DatabaseError
from django.db.models import Sum
from prometheus_client.parser import text_string_to_metric_families

from alerts.models import AlertSource, AlertState
from budgets.services import budget_period_current
from monitoring import metrics
from tests.factories import AlertFactory, BudgetFactory, ChannelFactory, NotificationFactory, PriceFactory, status_of
from tracking.batches import batch_cost_compute, batch_finish, batch_start
from tracking.gpu import GpuReading, gpu_sample_record
from tracking.models import CostEntry, Unit
from tracking.services import cost_entry_correct, cost_entry_record

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client, **headers) -> Samples:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, /, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def named(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def exact(number: float) -> Decimal:
    """The exposition's float back as the Decimal it was written from (money has at most 15 digits here)."""
    return Decimal(repr(number))


@pytest.fixture
def usage(gpt4o_prices):
    PriceFactory(
        provider="anthropic", model="claude-haiku-4-5", operation="chat", unit="input_token", unit_price="0.000001"
    )
    with time_machine.travel(NOW, tick=False):
        common = {"subject": "user-4711", "job": "job-99", "tags": {"env": "prod"}}
        cost_entry_record(
            provider="openai",
            model="gpt-4o",
            service="api",
            input_tokens=1000,
            output_tokens=200,
            cached_input_tokens=100,
            duration_ms=850,
            **common,
        )
        cost_entry_record(provider="openai", model="gpt-4o", service="api", outcome="error", duration_ms=120, **common)
        cost_entry_record(provider="openai", model="gpt-4o", service="batch", outcome="rate_limited", duration_ms=15)
        first = cost_entry_record(
            provider="anthropic", model="claude-haiku-4-5", service="api", input_tokens=3000, duration_ms=4000
        ).entry
        cost_entry_correct(entry=first, amount="0.0025", note="invoice")
        cost_entry_record(provider="anthropic", model="claude-unknown", service="api", input_tokens=5)  # unpriced
        cost_entry_record(provider="openai", model="gpt-4o", service="api", amount="7.5", currency="EUR")


def test_cost_per_series_equals_the_ledger_to_the_nano_dollar(client, usage):
    samples = scrape(client)

    costs = named(samples, "costcontrol_cost_dollars_total")
    ledger = CostEntry.objects.filter(currency="USD").values("provider", "service", "operation", "model")
    expected = {
        frozenset({"provider": r["provider"], "service": r["service"], "operation": r["operation"], "model": r["model"]}.items()): r["total"]
        for r in ledger.annotate(total=Sum("amount")).order_by()
    }  # fmt: skip
    assert {labels: exact(v) for labels, v in costs.items()} == expected
    assert value(samples, "costcontrol_cost_dollars_total", provider="anthropic", service="api", operation="chat",
                 model="claude-haiku-4-5") == 0.0025  # the correction's amount counts  # fmt: skip
    # 7.5 EUR is not dollars
    assert (
        sum(exact(v) for v in costs.values())
        == CostEntry.objects.filter(currency="USD").aggregate(t=Sum("amount"))["t"]
    )


def test_tokens_requests_errors_rate_limits_and_unpriced_events_are_counted(client, usage):
    samples = scrape(client)

    assert value(samples, "costcontrol_tokens_total", provider="openai", model="gpt-4o", kind="input") == 1000
    assert value(samples, "costcontrol_tokens_total", provider="openai", model="gpt-4o", kind="output") == 200
    assert value(samples, "costcontrol_tokens_total", provider="openai", model="gpt-4o", kind="cached_input") == 100
    requests = named(samples, "costcontrol_requests_total")
    assert (
        requests[frozenset({"provider": "openai", "operation": "chat", "outcome": "success"}.items())] == 2
    )  # USD+EUR
    assert requests[frozenset({"provider": "openai", "operation": "chat", "outcome": "error"}.items())] == 1
    assert requests[frozenset({"provider": "openai", "operation": "chat", "outcome": "rate_limited"}.items())] == 1
    # anthropic: two calls; the correction is not a third
    assert sum(v for labels, v in requests.items() if ("provider", "anthropic") in labels) == 2
    assert value(samples, "costcontrol_errors_total", provider="openai", operation="chat", error_type="error") == 1
    assert (
        value(samples, "costcontrol_errors_total", provider="openai", operation="chat", error_type="rate_limited") == 1
    )
    assert value(samples, "costcontrol_rate_limit_hits_total", provider="openai", operation="chat") == 1
    assert value(samples, "costcontrol_unpriced_events_total", provider="anthropic", model="claude-unknown") == 1
    assert value(samples, "costcontrol_unpriced_events_total", provider="openai", model="gpt-4o") == 0


def test_the_duration_histogram_holds_the_recorded_durations(client, usage):
    samples = scrape(client)

    openai = {"provider": "openai", "operation": "chat"}
    assert value(samples, "costcontrol_request_duration_seconds_count", **openai) == 3
    assert value(samples, "costcontrol_request_duration_seconds_sum", **openai) == pytest.approx(0.985)
    assert value(samples, "costcontrol_request_duration_seconds_bucket", le="0.1", **openai) == 1  # 15 ms
    assert value(samples, "costcontrol_request_duration_seconds_bucket", le="0.25", **openai) == 2  # + 120 ms
    assert value(samples, "costcontrol_request_duration_seconds_bucket", le="1.0", **openai) == 3  # + 850 ms
    assert value(samples, "costcontrol_request_duration_seconds_bucket", le="+Inf", **openai) == 3
    anthropic = {"provider": "anthropic", "operation": "chat"}
    assert value(samples, "costcontrol_request_duration_seconds_bucket", le="2.5", **anthropic) == 0
    assert value(samples, "costcontrol_request_duration_seconds_bucket", le="5.0", **anthropic) == 1


def test_no_label_carries_a_subject_a_job_or_a_tag(client, usage):
    body = client.get("/metrics").content.decode()

    assert "user-4711" not in body and "job-99" not in body and "prod" not in body
    for doc in metrics.METRICS:
        assert not {"subject", "job", "batch", "tag"} & set(doc.labels), doc.name


def test_what_a_worker_records_after_a_scrape_appears_when_the_cache_expires(client, usage, settings):
    settings.METRICS_CACHE_SECONDS = 5
    clock = [1000.0]
    with patch.object(metrics.COLLECTOR, "_clock", lambda: clock[0]):
        before = value(scrape(client), "costcontrol_rate_limit_hits_total", provider="openai", operation="chat")
        cost_entry_record(provider="openai", model="gpt-4o", outcome="rate_limited")  # any process, same database
        clock[0] += 4
        cached = value(scrape(client), "costcontrol_rate_limit_hits_total", provider="openai", operation="chat")
        clock[0] += 2
        fresh = value(scrape(client), "costcontrol_rate_limit_hits_total", provider="openai", operation="chat")

    assert (before, cached, fresh) == (1, 1, 2)


def test_budgets_are_exported_as_the_status_selector_sees_them(client, gpt4o_prices):
    with time_machine.travel(NOW, tick=False):
        monthly = BudgetFactory(name="Global", scope="global", amount=Decimal("250"), period="monthly")
        daily = BudgetFactory(name="gpt-4o daily", scope="model:gpt-4o", amount=Decimal("0.01"), period="daily")
        lifetime = BudgetFactory(name="Pilot", scope="service:api", amount=Decimal("5"), period="none")
        BudgetFactory(name="Euro", scope="global", amount=Decimal("5"), currency="EUR")
        budget_period_current(budget=monthly, at=NOW)  # opened, as beat does; the others are not yet
        for hours in (1, 30, 200):
            cost_entry_record(provider="openai", model="gpt-4o", service="api", input_tokens=4000,
                              occurred_at=NOW - timedelta(hours=hours))  # fmt: skip
        cost_entry_record(provider="openai", model="gpt-4o", service="api", input_tokens=4000)
        samples = scrape(client)

        for budget in (monthly, daily, lifetime):
            status = status_of(budget, NOW)
            labels = {"budget": budget.name, "scope": budget.scope, "period": budget.period}
            assert exact(value(samples, "costcontrol_budget_spent_dollars", **labels)) == status.spent
            assert exact(value(samples, "costcontrol_budget_limit_dollars", **labels)) == status.limit
            assert value(samples, "costcontrol_budget_utilization_ratio", **labels) == float(
                status.spent / status.limit
            )
            if status.forecast is None:
                assert ("costcontrol_budget_forecast_dollars", frozenset(labels.items())) not in samples
                assert ("costcontrol_budget_period_end_timestamp_seconds", frozenset(labels.items())) not in samples
            else:
                assert exact(value(samples, "costcontrol_budget_forecast_dollars", **labels)) == status.forecast.amount
                end = value(samples, "costcontrol_budget_period_end_timestamp_seconds", **labels)
                assert end == status.period.end.timestamp()
    assert value(samples, "costcontrol_budget_utilization_ratio", budget="gpt-4o daily", scope="model:gpt-4o",
                 period="daily") == 2.0  # 0.02 spent today of 0.01  # fmt: skip
    assert not [labels for labels in named(samples, "costcontrol_budget_spent_dollars") if ("budget", "Euro") in labels]


def test_two_budgets_of_one_name_and_scope_stay_two_series_and_a_zero_limit_has_no_ratio(client, db):
    first = BudgetFactory(name="Same", scope="global", amount=Decimal("0"))
    second = BudgetFactory(name="Same", scope="global", amount=Decimal("10"))

    spent = named(scrape(client), "costcontrol_budget_spent_dollars")
    names = sorted(dict(labels)["budget"] for labels in spent)
    assert names == ["Same", f"Same (#{second.pk})"]
    ratios = named(scrape(client), "costcontrol_budget_utilization_ratio")
    assert [dict(labels)["budget"] for labels in ratios] == [f"Same (#{second.pk})"]
    assert first.pk < second.pk


def test_cost_per_lead_of_each_pipelines_last_batch_and_of_the_month(client, gpt4o_prices):
    with time_machine.travel(NOW - timedelta(hours=5), tick=False):
        for job, (name, leads, tokens) in enumerate(
            (("nightly", 10, 400_000), ("nightly", 4, 800_000), ("weekly", 0, 400_000))
        ):
            batch = batch_start(name=name, job=f"run-{job}")
            cost_entry_record(provider="openai", model="gpt-4o", job=batch.job, input_tokens=tokens)
            batch = batch_finish(batch=batch, leads=leads)
            batch_cost_compute(batch=batch)
    with time_machine.travel(NOW, tick=False):
        samples = scrape(client)

    per_lead = named(samples, "costcontrol_batch_cost_per_lead_dollars")
    assert per_lead == {frozenset({("pipeline", "nightly")}): 0.5}  # 2 USD / 4 leads; weekly: no leads, undefined
    # 4 USD this month / 14 leads, rounded to the nano-dollar as tracking.batches.cost_per_lead does
    assert exact(value(samples, "costcontrol_cost_per_lead_month_dollars")) == Decimal("0.285714286")


def test_gpu_cost_utilisation_and_idle_time_per_device(client, settings):
    PriceFactory(provider="gpu", model="default", operation="gpu", unit=Unit.GPU_HOUR, unit_price="0.50")
    settings.GPU_BURST_COST_DOLLARS = Decimal("2")

    def reading(utilisation: int) -> GpuReading:
        return GpuReading(index=0, uuid="GPU-1", name="NVIDIA H100", utilisation_percent=utilisation,
                          memory_used=1, memory_total=2, power_watts=None)  # fmt: skip

    for hours, utilisation in ((0, 10), (1, 25), (2, 100)):
        at = NOW + timedelta(hours=hours)
        with time_machine.travel(at, tick=False):
            gpu_sample_record(reading=reading(utilisation), sampled_at=at, interval_seconds=3600, burst=True)
    labels = {"gpu": "GPU-1", "name": "NVIDIA H100"}
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        samples = scrape(client)

        billed = CostEntry.objects.filter(provider="gpu").aggregate(t=Sum("amount"))["t"]
        assert exact(value(samples, "costcontrol_gpu_cost_dollars_total", **labels)) == billed == Decimal(4)
        assert value(samples, "costcontrol_gpu_utilization_ratio", **labels) == 1.0
        assert value(samples, "costcontrol_gpu_idle_seconds_total", **labels) == 3600 * 0.75  # 2nd hour 25 % busy
        assert (
            value(samples, "costcontrol_gpu_last_sample_timestamp_seconds", **labels)
            == (NOW + timedelta(hours=2)).timestamp()
        )
    at = NOW + timedelta(hours=3)
    with time_machine.travel(at, tick=False):
        gpu_sample_record(reading=reading(0), sampled_at=at, interval_seconds=3600, burst=False)
        assert value(scrape(client), "costcontrol_gpu_idle_seconds_total", **labels) == 3600 * 1.75  # counted on


def test_alerts_firing_by_severity_and_the_notifications_waiting(client, db):
    channel = ChannelFactory(name="ops", kind="email", target="ops@example.com")
    for i, (level, state) in enumerate((("warning", "firing"), ("warning", "firing"), ("critical", "firing"),
                                        ("critical", "resolved"))):  # fmt: skip
        alert = AlertFactory(key=f"k{i}", source=AlertSource.RULE, scope="global", level=level, state=state,
                                     title="t", message="m", first_fired_at=NOW, last_fired_at=NOW)  # fmt: skip
    statuses = (("pending", NOW - timedelta(minutes=20)), ("sending", NOW - timedelta(minutes=40)),
                ("sent", NOW - timedelta(hours=2)), ("failed", NOW))  # fmt: skip
    for i, (status, created) in enumerate(statuses):
        NotificationFactory(channel=channel, alert=alert, kind="firing", dedup_key=f"n{i}", subject="s",
                                    text="t", status=status, created_at=created)  # fmt: skip
    samples = scrape(client)

    firing = {dict(labels)["severity"]: v for labels, v in named(samples, "costcontrol_alerts_firing").items()}
    assert firing == {"info": 0, "warning": 2, "critical": 1, "exceeded": 0}
    assert AlertState.FIRING == "firing"
    assert value(samples, "costcontrol_notifications_pending") == 2
    assert value(samples, "costcontrol_notifications_failed") == 1
    assert (
        value(samples, "costcontrol_notifications_oldest_pending_timestamp_seconds")
        == (NOW - timedelta(minutes=40)).timestamp()
    )


def test_a_database_that_cannot_be_read_still_answers_and_says_so(client, db):
    with patch.object(metrics, "business_families", autospec=True, side_effect=DatabaseError("connection refused")):
        samples = scrape(client)

    assert value(samples, "costcontrol_metrics_database_up") == 0
    assert not named(samples, "costcontrol_cost_dollars_total")
    assert any(name.startswith("django_http_requests") for name, _ in samples)  # the framework metrics are there


def test_the_framework_metrics_of_django_prometheus_are_exported(client, db):
    client.get("/healthz")
    samples = scrape(client)

    assert value(samples, "costcontrol_metrics_database_up") == 1
    assert any(name == "django_http_requests_total_by_view_transport_method_total" for name, _ in samples)
    assert any(name.startswith("django_db_execute_total") for name, _ in samples)  # the DB backend wrapper


def test_with_several_gunicorn_workers_the_business_metrics_are_still_exported(client, usage, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    assert named(scrape(client), "costcontrol_cost_dollars_total")


# --- protection -----------------------------------------------------------------------------------------


def test_metrics_are_open_by_default_locally(client, db):
    assert client.get("/metrics").status_code == 200


def test_a_bearer_token_is_required_once_set(client, db, settings):
    settings.METRICS_BEARER_TOKEN = "s3cret-token"

    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic s3cret-token").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200


def test_an_ip_allow_list_refuses_other_addresses(client, db, settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "192.168.1.7"]

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.8").status_code == 403
    # a forwarded header is not trusted
    assert client.get("/metrics", REMOTE_ADDR="8.8.8.8", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 403


def test_with_both_set_both_are_required(client, db, settings):
    settings.METRICS_BEARER_TOKEN = "tok"
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]

    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.1", HTTP_AUTHORIZATION="Bearer tok").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer tok").status_code == 200


def test_only_get_is_served(client, db):
    assert client.post("/metrics").status_code == 405


def test_the_deploy_check_warns_while_metrics_are_open(settings):
    def ids() -> set[str]:
        return {m.id for m in run_checks(include_deployment_checks=True) if m.id.startswith("monitoring.")}

    assert ids() == {"monitoring.W001"}
    settings.METRICS_BEARER_TOKEN = "tok"
    assert ids() == set()
    settings.METRICS_ALLOWED_IPS = ["not-an-address"]
    assert ids() == {"monitoring.W002"}


# --- the exposition is valid -----------------------------------------------------------------------------


def test_every_declared_metric_is_exported_and_nothing_undeclared(client, usage):
    with time_machine.travel(NOW, tick=False):
        BudgetFactory(name="Global", scope="global", amount=Decimal("250"))
        BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("5"))
    names = {name for name, _ in scrape(client) if name.startswith("costcontrol_")}
    declared = {sample for doc in metrics.METRICS for sample in doc.sample_names}

    assert names <= declared
    # without batches, GPUs, bills and waiting notifications, those have no samples; everything else does
    optional = {"costcontrol_batch_cost_per_lead_dollars", "costcontrol_cost_per_lead_month_dollars",
                "costcontrol_notifications_oldest_pending_timestamp_seconds"}  # fmt: skip
    unsampled = {d for d in declared - names if not d.startswith(("costcontrol_gpu_", "costcontrol_bill_"))}
    assert unsampled == optional


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_finds_no_problem_in_the_exposition(client, usage):
    BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("5"))  # its top value user-4711 too
    body = client.get("/metrics").content
    assert b'costcontrol_budget_template_values{budget="Per user"' in body

    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert (result.stdout + result.stderr).strip() == b""
