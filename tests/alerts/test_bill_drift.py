"""Metered against billed: the drift per day and provider (tracking.selectors.bill_drift), and the alert rule
"metered spend differs from the bill by more than X % for a day", firing once per day and resolving."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError

from alerts.evaluation import alerts_evaluate
from alerts.models import Alert, AlertRule, AlertState, Metric, Notification, Window
from tests.conftest import EPOCH
from tests.factories import ChannelFactory, PriceFactory, TeamFactory
from tracking.models import BilledCost, BillingDay, BillingSource
from tracking.selectors import bill_drift
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db

D1, D2, D3 = date(2026, 11, 17), date(2026, 11, 18), date(2026, 11, 19)


def metered(day: date, amount: str, provider: str = "openai") -> None:
    with time_machine.travel(datetime(2026, 11, 20, 12, tzinfo=UTC), tick=False):
        cost_entry_record(
            provider=provider,
            model="gpt-4o",
            amount=amount,
            occurred_at=datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=10),
        )


def billed(day: date, amount: str, provider: str = "openai", *, lines: int = 1) -> None:
    source, _ = BillingSource.objects.get_or_create(
        name=f"{provider} org", defaults={"kind": BillingSource.Kind.CSV, "provider": provider}
    )
    now = datetime(2026, 11, 20, 6, tzinfo=UTC)
    BillingDay.objects.update_or_create(
        source=source, day=day, defaults={"status": "ok", "lines": lines, "attempted_at": now, "imported_at": now}
    )
    for n in range(lines):
        BilledCost.objects.create(
            source=source, day=day, provider=provider, model="gpt-4o", description=f"line {n}", currency="USD",
            amount=Decimal(amount) / lines,
        )  # fmt: skip


def test_drift_is_metered_against_billed_per_day_and_provider_for_the_days_billed(gpt4o_prices):
    metered(D1, "10.00")
    metered(D2, "9.00")
    metered(D3, "12.00")  # no bill for this day yet: not compared
    PriceFactory(provider="anthropic", model="gpt-4o", unit="input_token", unit_price="0.000001", valid_from=EPOCH)
    metered(D1, "3.00", provider="anthropic")  # no source for anthropic at all
    billed(D1, "10.00", lines=4)
    billed(D2, "12.00")
    rows = bill_drift(start=D1, end=date(2026, 11, 20))
    assert [(r.day, r.provider, r.metered, r.billed) for r in rows] == [
        (D1, "openai", Decimal("10"), Decimal("10")),
        (D2, "openai", Decimal("9"), Decimal("12")),
    ]
    first, second = rows
    assert (first.difference, first.drift_percent, first.coverage_percent) == (0, 0, Decimal("100.0"))
    assert (second.difference, second.drift_percent, second.coverage_percent) == (
        Decimal("-3"),
        Decimal("-25.00"),
        Decimal("75.0"),
    )


def test_a_day_billed_at_nothing_is_compared_and_one_never_imported_is_not(gpt4o_prices):
    metered(D1, "4.00")
    billed(D1, "0", lines=0)
    source = BillingSource.objects.get()
    BillingDay.objects.create(
        source=source, day=D2, status="failed", message="HTTP 500", attempted_at=datetime.now(UTC)
    )
    metered(D2, "5.00")
    [row] = bill_drift(start=D1, end=D3)
    assert (row.day, row.metered, row.billed, row.drift_percent, row.coverage_percent) == (
        D1,
        Decimal("4"),
        Decimal("0"),
        Decimal("100.00"),
        None,
    )


def rule(**fields) -> AlertRule:
    values = {
        "name": "OpenAI bill",
        "metric": Metric.BILL_DRIFT,
        "scope": "provider:openai",
        "window": Window.LAST_BILLED_DAY,
        "threshold": Decimal("10"),
        "cooldown": timedelta(minutes=1),
    }
    values.update(fields)
    made = AlertRule(**values)
    made.full_clean()
    made.save()
    return made


def evaluate(at: datetime) -> None:
    with time_machine.travel(at, tick=False):
        AlertRule.objects.update(next_evaluation_at=None)
        alerts_evaluate(now=at)


def test_the_rule_fires_once_for_a_day_that_drifts_and_resolves_when_a_later_day_agrees(gpt4o_prices):
    drift_rule = rule()
    drift_rule.channels.add(ChannelFactory())
    metered(D1, "9.00")
    billed(D1, "12.00")  # -25 %
    evaluate(datetime(2026, 11, 18, 7, tzinfo=UTC))
    evaluate(datetime(2026, 11, 18, 9, tzinfo=UTC))  # hours later, the same day: told once, no cooldown repeat
    [alert] = Alert.objects.all()
    assert alert.state == AlertState.FIRING and alert.key == f"rule:{drift_rule.pk}:provider:openai:2026-11-17"
    assert "metered 9.00 USD, billed 12.00 USD on 2026-11-17 (-25.00 %)" in alert.title
    assert Notification.objects.filter(alert=alert).count() == 1
    told = Notification.objects.count()

    metered(D2, "10.00")
    billed(D2, "10.50")  # within 10 %
    evaluate(datetime(2026, 11, 19, 7, tzinfo=UTC))
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and Alert.objects.count() == 1
    assert Notification.objects.count() > told  # the resolution is told

    metered(D3, "20.00")
    billed(D3, "10.00")  # +100 %: a new day, a new alert
    evaluate(datetime(2026, 11, 20, 7, tzinfo=UTC))
    latest = Alert.objects.get(state=AlertState.FIRING)
    assert latest.key.endswith("2026-11-19") and latest.value == Decimal("100")
    assert AlertRule.objects.get().last_value == Decimal("100")


def test_a_rule_with_no_bill_yet_neither_fires_nor_resolves(gpt4o_prices):
    rule()
    metered(D1, "9.00")
    evaluate(datetime(2026, 11, 18, 7, tzinfo=UTC))
    assert not Alert.objects.exists() and AlertRule.objects.get().last_value is None


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"window": Window.DAY}, "window", "last day billed"),
        ({"metric": Metric.SPEND}, "window", "only the difference from the bill"),
        ({"scope": "service:chat"}, "scope", "global or provider:NAME"),
    ],
)
def test_a_difference_rule_is_refused_where_bills_cannot_answer_it(fields, field, words):
    with pytest.raises(ValidationError) as raised:
        rule(**fields)
    assert words in " ".join(raised.value.message_dict[field])


def test_a_teams_difference_rule_is_refused():
    with pytest.raises(ValidationError) as raised:
        rule(team=TeamFactory(name="ml"), scope="team:ml/provider:openai")
    assert "organisation" in " ".join(raised.value.message_dict["team"])


def test_metrics_show_each_providers_last_day_billed_and_each_sources_last_pull(gpt4o_prices):
    from monitoring.metrics import bill_families

    metered(D1, "9.00")
    billed(D1, "12.00")
    metered(D2, "10.00")
    billed(D2, "8.00")
    BillingSource.objects.update(last_success_at=datetime(2026, 11, 20, 6, tzinfo=UTC))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in bill_families(at=datetime(2026, 11, 20, 7, tzinfo=UTC))
        for sample in family.samples
    }
    openai = (("provider", "openai"),)
    assert samples[("costcontrol_bill_metered_dollars", openai)] == 10.0
    assert samples[("costcontrol_bill_billed_dollars", openai)] == 8.0
    assert samples[("costcontrol_bill_drift_ratio", openai)] == 0.25
    assert (
        samples[("costcontrol_bill_last_day_timestamp_seconds", openai)]
        == datetime(2026, 11, 18, tzinfo=UTC).timestamp()
    )
    source = (("provider", "openai"), ("source", "openai org"))
    assert (
        samples[("costcontrol_bill_last_success_timestamp_seconds", source)]
        == datetime(2026, 11, 20, 6, tzinfo=UTC).timestamp()
    )


def test_the_daily_report_shows_each_providers_last_day_billed(gpt4o_prices):
    from alerts.report_email import daily_report_html, daily_report_text
    from alerts.reports import daily_report_build

    at = datetime(2026, 11, 20, 7, tzinfo=UTC)
    report = daily_report_build(day=date(2026, 11, 19), now=at)
    assert "No provider bills are imported" in daily_report_text(report)
    metered(D1, "9.00")
    billed(D1, "12.00")
    report = daily_report_build(day=date(2026, 11, 19), now=at)
    text = daily_report_text(report)
    assert "METERED VS BILLED" in text
    line = next(line for line in text.splitlines() if line.strip().startswith("openai") and "Tue 17 Nov" in line)
    assert "9.00 USD" in line and "12.00 USD" in line and "-3.00 USD" in line and "-25.0 %" in line and "75.0 %" in line
    html = daily_report_html(report)
    assert "Metered vs billed" in html and "12.00 USD" in html


def test_the_cost_dashboard_draws_metered_against_billed_for_the_organisation_only(gpt4o_prices):
    from tests.admin_clients import staff_client, superuser_client

    metered(D1, "9.00")
    billed(D1, "12.00")
    url = "/admin/analytics/dashboard/?start=2026-11-01&end=2026-11-19"
    with time_machine.travel(datetime(2026, 11, 20, 12, tzinfo=UTC), tick=False):
        page = superuser_client().get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert 'id="chart-bill_drift"' in html and "Metered vs billed, per provider" in html
        chart = page.context["charts"]["bill_drift"]
        assert chart["labels"] == ["2026-11-17"] and [d["data"] for d in chart["datasets"]] == [
            [Decimal("9")],
            [Decimal("12")],
        ]
        exported = superuser_client("root2").get(
            "/admin/analytics/dashboard/export/bill_drift.csv?start=2026-11-01&end=2026-11-19"
        )
        body = b"".join(exported.streaming_content).decode()
        assert "2026-11-17,openai,9" in body and ",-25.00," in body
        ml = TeamFactory(name="ml")
        _, staff = staff_client("ml-lead", [ml], perms=["view_dashboard"])
        assert "chart-bill_drift" not in staff.get(url).content.decode()  # bills are the organisation's


# --- budgets that count the bills ------------------------------------------------------------------------


def test_a_budget_that_counts_bills_takes_the_billed_amount_for_closed_billed_days_only(gpt4o_prices):
    from budgets.models import Budget
    from budgets.selectors import budget_statuses

    counted = Budget.objects.create(
        name="OpenAI actuals", scope="provider:openai", amount=Decimal("100"), count_billed=True
    )
    metered_only = Budget.objects.create(name="OpenAI metered", scope="provider:openai", amount=Decimal("100"))
    everything = Budget.objects.create(name="All actuals", scope="global", amount=Decimal("100"), count_billed=True)
    metered(D1, "9.00")
    metered(D2, "10.00")
    metered(D3, "4.00")  # today, at the time asked: metered whatever the bill says
    billed(D1, "12.00")
    billed(D2, "10.50")
    at = datetime(2026, 11, 19, 18, tzinfo=UTC)
    with time_machine.travel(at, tick=False):
        statuses = {s.budget.name: s.spent for s in budget_statuses([counted, metered_only, everything], at=at)}
    assert statuses == {
        "OpenAI actuals": Decimal("26.50"),  # 12.00 + 10.50 billed, 4.00 metered today
        "OpenAI metered": Decimal("23.00"),
        "All actuals": Decimal("26.50"),
    }


def test_the_budget_page_explains_which_days_are_billed(gpt4o_prices):
    from budgets.models import Budget
    from tests.admin_clients import superuser_client

    budget = Budget.objects.create(
        name="OpenAI actuals", scope="provider:openai", amount=Decimal("100"), count_billed=True
    )
    metered(D1, "9.00")
    billed(D1, "12.00")
    with time_machine.travel(datetime(2026, 11, 19, 18, tzinfo=UTC), tick=False):
        page = superuser_client().get(f"/admin/budgets/budget/{budget.pk}/change/").content.decode()
    assert (
        "counted for 1 closed UTC day (2026-11-17 to 2026-11-17): 12.00 USD billed instead of 9.00 USD metered" in page
    )
    assert "actuals replace estimates" in page  # the switch's own explanation


@pytest.mark.parametrize(
    ("fields", "allowed"),
    [
        ({"scope": "global"}, True),
        ({"scope": "provider:openai"}, True),
        ({"scope": "service:chat"}, False),
        ({"scope": "subject:*"}, False),
        ({"scope": "team:ml/provider:openai", "team": "ml"}, False),
    ],
)
def test_only_the_whole_spend_or_a_providers_budget_may_count_bills(fields, allowed):
    from budgets.models import Budget

    if "team" in fields:
        fields = {**fields, "team": TeamFactory(name=fields["team"])}
    budget = Budget(name="b", amount=Decimal("10"), count_billed=True, **fields)
    if allowed:
        budget.full_clean()
    else:
        with pytest.raises(ValidationError) as raised:
            budget.full_clean()
        assert "only a budget of the whole spend" in " ".join(raised.value.message_dict["count_billed"])
