from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from alerts.models import AlertSource
from budgets.models import Budget
from tests.analytics.conftest import HOUR, T0
from tests.factories import AlertFactory, PriceFactory
from tracking.models import CostEntry
from tracking.selectors import spend_total
from tracking.services import cost_entry_record_many

pytestmark = pytest.mark.django_db

NOW = T0 + timedelta(minutes=30)
DASHBOARD = "/admin/analytics/dashboard/"


def body(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


@pytest.fixture
def usage(db):
    for provider, model in (("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5")):
        PriceFactory(provider=provider, model=model, unit="input_token", unit_price=Decimal("0.000002"))
    events = []
    for i in range(30):
        provider, model = ("openai", "gpt-4o") if i % 3 else ("anthropic", "claude-haiku-4-5")
        events.append(
            {
                "provider": provider,
                "model": model,
                "service": "support" if i % 2 else "search",
                "subject": '=HYPERLINK("http://x")' if i == 0 else f"user-{i % 4}",
                "tags": {"env": "prod"},
                "input_tokens": 100_000 + 1000 * i,
                "occurred_at": NOW - i * HOUR,
                "idempotency_key": f"dash:{i}",
            }
        )
    with time_machine.travel(NOW, tick=False):
        results = cost_entry_record_many(events)
    assert all(r.status == "accepted" for r in results)
    budget = Budget.objects.create(name="OpenAI tiny", scope="provider:openai", amount=Decimal("1"), period="monthly")
    AlertFactory(
        key="test:1",
        source=AlertSource.RULE,
        scope="global",
        level="warning",
        title="Something is burning",
        message="m",
        first_fired_at=NOW,
        last_fired_at=NOW,
    )
    return budget


@pytest.fixture
def admin_client_at_now(client, admin_user):
    client.force_login(admin_user)
    with time_machine.travel(NOW, tick=False):
        yield client


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(DASHBOARD)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_need_the_view_dashboard_permission(client, usage):
    user = get_user_model().objects.create_user("finance", password="x", is_staff=True)
    client.force_login(user)
    assert client.get(DASHBOARD).status_code == 403
    assert DASHBOARD not in body(client.get("/admin/"))

    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    user = get_user_model().objects.get(pk=user.pk)
    client.force_login(user)
    with time_machine.travel(NOW, tick=False):
        assert client.get(DASHBOARD).status_code == 200
        assert DASHBOARD in body(client.get("/admin/"))


def test_the_dashboard_shows_spend_budgets_alerts_and_charts(admin_client_at_now, usage):
    response = admin_client_at_now.get(DASHBOARD)
    html = body(response)

    assert response.status_code == 200
    month = spend_total(scope="global", start=T0.replace(day=1, hour=0), end=T0 + HOUR)
    assert month > 0
    assert f'data-card="2">{month.quantize(Decimal("0.01"))} USD' in html
    assert "OpenAI tiny" in html  # 1 USD budget, long exceeded: at risk
    assert "Something is burning" in html
    assert "gpt-4o" in html and "claude-haiku-4-5" in html
    charts = response.context["charts"]
    assert set(charts) == {"spend_by_provider", "top_models", "top_subjects", "cost_per_lead", "gpu"}
    assert {d["label"] for d in charts["spend_by_provider"]["datasets"]} == {"openai", "anthropic"}
    # The library is served from our own static files.
    assert "analytics/vendor/chartjs-4.6.1/chart.umd.min.js" in html
    assert "cdn" not in html.lower()


def test_a_provider_filter_changes_the_numbers(admin_client_at_now, usage):
    whole = admin_client_at_now.get(DASHBOARD).context["data"]
    openai = admin_client_at_now.get(DASHBOARD, {"provider": "openai"}).context["data"]

    assert openai.scope == "provider:openai"
    assert openai.cards[1].value == spend_total(scope="provider:openai", start=T0.replace(day=1, hour=0), end=T0 + HOUR)
    assert Decimal(0) < openai.cards[1].value < whole.cards[1].value
    assert [r[0] for r in openai.top_models.rows] == ["gpt-4o"]
    assert (
        "Not available under the filter"
        in admin_client_at_now.get(DASHBOARD, {"service": "support"}).context["data"].top_subjects.note
    )


def test_two_dimension_filters_at_once_are_refused_with_the_reason(admin_client_at_now, usage):
    response = admin_client_at_now.get(DASHBOARD, {"provider": "openai", "service": "support"})

    assert response.status_code == 200
    assert response.context["data"] is None
    assert "Filter by one of provider, service or tag at a time" in body(response)


def test_a_dashboard_table_exports_as_streamed_csv_with_the_filters(admin_client_at_now, usage):
    url = reverse("admin:analytics_dashboard_export", args=["models"])

    response = admin_client_at_now.get(url, {"provider": "openai"})

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "provider-openai" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(body(response))))
    assert rows[0] == ["model", "spend", "calls", "tokens"]
    assert [r[0] for r in rows[1:]] == ["gpt-4o"]
    assert admin_client_at_now.get(reverse("admin:analytics_dashboard_export", args=["nothing"])).status_code == 404


def test_the_cost_entry_admin_exports_the_selected_entries_as_csv(admin_client_at_now, usage):
    ids = list(CostEntry.objects.order_by("pk").values_list("pk", flat=True)[:5])

    response = admin_client_at_now.post(
        reverse("admin:tracking_costentry_changelist"),
        {"action": "export_csv", ACTION_CHECKBOX_NAME: ids, "index": 0},
    )

    assert response.status_code == 200 and response.streaming
    rows = list(csv.DictReader(io.StringIO(body(response))))
    assert [int(r["id"]) for r in rows] == sorted(ids, key=lambda pk: CostEntry.objects.get(pk=pk).occurred_at)
    first = next(r for r in rows if int(r["id"]) == ids[0])
    entry = CostEntry.objects.get(pk=ids[0])
    assert Decimal(first["amount"]) == entry.amount
    assert json.loads(first["tags"]) == {"env": "prod"}
    # A subject that a spreadsheet would run as a formula is quoted.
    assert first["subject"] == "'" + entry.subject


def test_exporting_cost_entries_needs_the_dashboard_permission(client, usage):
    viewer = get_user_model().objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_costentry"))
    client.force_login(viewer)
    assert "export_csv" not in body(client.get(reverse("admin:tracking_costentry_changelist")))

    viewer.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(get_user_model().objects.get(pk=viewer.pk))
    assert "export_csv" in body(client.get(reverse("admin:tracking_costentry_changelist")))
