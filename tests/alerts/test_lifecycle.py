"""The alert lifecycle with frozen time: fire once per level per period, cooldown, resolve, ack, mute."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, connections

from alerts.evaluation import alerts_evaluate
from alerts.models import Alert, AlertState, Metric, Notification, NotificationKind, Window
from alerts.services import alert_acknowledge, alert_fire, alert_mute
from tests.factories import AlertRuleFactory, BudgetFactory, ChannelFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)


def notifications(kind: str | None = None) -> list[Notification]:
    qs = Notification.objects.order_by("pk")
    return list(qs.filter(kind=kind) if kind else qs)


def test_a_budget_level_fires_once_per_period_and_a_new_period_starts_afresh(spend, channel):
    budget = BudgetFactory(name="OpenAI monthly", scope="provider:openai", amount=Decimal("250"))
    with time_machine.travel(T0, tick=False):
        spend("205.10", T0 - timedelta(hours=2))
        alerts_evaluate()
        alerts_evaluate()  # the next tick: nothing new
    [alert] = Alert.objects.all()
    assert (alert.level, alert.state, alert.budget_id) == ("warning", "firing", budget.pk)
    [note] = notifications()
    assert note.kind == NotificationKind.FIRING and note.level == "warning"
    assert note.text.startswith("Budget 'OpenAI monthly' is at 82 % (205.10 of 250.00 USD) with 10 days left;")
    assert "; forecast " in note.text and "by 30 Nov (linear; 90 % interval " in note.text
    assert f"/admin/budgets/budget/{budget.pk}/change/" in note.text
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        spend("40", T0 + timedelta(hours=20))  # 245.10: critical
        alerts_evaluate()
        alerts_evaluate()
    assert [n.level for n in notifications()] == ["warning", "critical"]
    with time_machine.travel(datetime(2026, 12, 1, 0, 10, tzinfo=UTC), tick=False):
        alerts_evaluate()  # December: the November alerts resolve quietly
        spend("130", datetime(2026, 12, 1, 0, 5, tzinfo=UTC))
        alerts_evaluate()
    assert [n.level for n in notifications()] == ["warning", "critical", "info"]
    assert Alert.objects.filter(state=AlertState.FIRING).count() == 1


def test_raising_the_limit_resolves_the_level_and_says_so(spend, channel):
    budget = BudgetFactory(amount=Decimal("100"))
    with time_machine.travel(T0, tick=False):
        spend("85", T0)
        alerts_evaluate()
        budget.amount = Decimal("1000")
        budget.save()
        alerts_evaluate()
    assert [n.kind for n in notifications()] == ["firing", "resolved"]
    assert notifications()[1].subject.startswith("[resolved] [warning]")


@pytest.fixture
def hourly_rule(channel):
    rule = AlertRuleFactory(
        name="Spend this hour",
        metric=Metric.SPEND,
        window=Window.HOUR,
        threshold=Decimal("50"),
        cooldown=timedelta(hours=1),
    )
    rule.channels.add(channel)
    return rule


def test_a_rule_renotifies_after_its_cooldown_and_announces_its_resolve(spend, hourly_rule):
    with time_machine.travel(T0, tick=False):
        spend("60", T0)
        alerts_evaluate()
    with time_machine.travel(T0 + timedelta(minutes=30), tick=False):
        alerts_evaluate()  # still firing, inside the cooldown: quiet
    assert [n.kind for n in notifications()] == ["firing"]
    with time_machine.travel(T0 + timedelta(minutes=50), tick=False):
        spend("1", T0 + timedelta(minutes=50))
        alerts_evaluate()
    assert [n.kind for n in notifications()] == ["firing"]  # 10:55: 61 USD, still inside the cooldown
    with time_machine.travel(T0 + timedelta(minutes=65), tick=False):
        alerts_evaluate()  # 11:10: a new hour, 0 spent: resolved
    assert [n.kind for n in notifications()] == ["firing", "resolved"]
    with time_machine.travel(T0 + timedelta(minutes=70), tick=False):
        spend("70", T0 + timedelta(minutes=70))
        alerts_evaluate()  # fires again: a new incident of the same key
    assert [n.kind for n in notifications()] == ["firing", "resolved", "firing"]
    alert = Alert.objects.get()
    assert alert.state == "firing" and alert.notify_count == 2
    with time_machine.travel(T0 + timedelta(minutes=72), tick=False):
        spend("1", T0 + timedelta(minutes=72))
    with time_machine.travel(T0 + timedelta(minutes=131), tick=False):
        spend("0.5", T0 + timedelta(minutes=100))
        # 12:16: the 11:xx spend is a past hour now, so the rule resolves rather than repeats.
        alerts_evaluate()
    assert [n.kind for n in notifications()][-1] == "resolved"


def test_a_rule_that_stays_firing_repeats_no_sooner_than_its_cooldown(spend, channel):
    rule = AlertRuleFactory(
        name="Spend today", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal("5"), cooldown=timedelta(hours=2)
    )
    with time_machine.travel(T0, tick=False):
        spend("6", T0)
        alerts_evaluate()
    for minutes in (30, 60, 119):
        with time_machine.travel(T0 + timedelta(minutes=minutes), tick=False):
            alerts_evaluate()
    assert [n.kind for n in notifications()] == ["firing"]
    with time_machine.travel(T0 + timedelta(minutes=120), tick=False):
        alerts_evaluate()
    assert [n.kind for n in notifications()] == ["firing", "repeat"]
    assert Alert.objects.get(rule=rule).notify_count == 2


def test_acknowledged_alerts_stop_repeating_and_muted_ones_stay_quiet(spend, channel, admin_user):
    AlertRuleFactory(
        name="Spend today", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal("5"), cooldown=timedelta(hours=1)
    )
    with time_machine.travel(T0, tick=False):
        spend("6", T0)
        alerts_evaluate()
        alert = Alert.objects.get()
        assert alert_acknowledge(alert=alert, user=admin_user)
    with time_machine.travel(T0 + timedelta(hours=3), tick=False):
        alerts_evaluate()
    assert [n.kind for n in notifications()] == ["firing"]
    Alert.objects.filter(pk=alert.pk).update(acknowledged_at=None)
    with time_machine.travel(T0 + timedelta(hours=4), tick=False):
        alert_mute(alert=alert, until=T0 + timedelta(hours=6))
        alerts_evaluate()
    assert [n.kind for n in notifications()] == ["firing"]
    with time_machine.travel(T0 + timedelta(hours=6, minutes=1), tick=False):
        alerts_evaluate()  # the mute is over and it still fires: one repeat
    assert [n.kind for n in notifications()] == ["firing", "repeat"]


def test_channels_get_only_levels_at_or_above_their_minimum(spend):
    loud = ChannelFactory(name="all", kind="webhook", target="http://127.0.0.1:9/a", is_default=True)
    pager = ChannelFactory(
        name="pager", kind="webhook", target="http://127.0.0.1:9/b", is_default=True, min_level="critical"
    )
    BudgetFactory(amount=Decimal("100"))
    with time_machine.travel(T0, tick=False):
        spend("60", T0)
        alerts_evaluate()
        spend("40", T0)
        alerts_evaluate()
    assert [(n.channel_id, n.level) for n in notifications()] == [
        (loud.pk, "info"),
        (loud.pk, "exceeded"),
        (pager.pk, "exceeded"),
    ]


def test_a_rule_that_raises_is_pushed_back_and_the_others_still_run(spend, channel, monkeypatch):
    import alerts.evaluation

    broken = AlertRuleFactory(name="broken", metric=Metric.TOKENS, window=Window.DAY, threshold=Decimal(1))
    AlertRuleFactory(name="works", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal(1))
    real = alerts.evaluation.metric_value

    def metric_value(rule, now, **kwargs):
        if rule.name == "broken":
            raise RuntimeError("boom")
        return real(rule, now, **kwargs)

    monkeypatch.setattr(alerts.evaluation, "metric_value", metric_value)
    with time_machine.travel(T0, tick=False):
        spend("2", T0)
        summary = alerts_evaluate()
    broken.refresh_from_db()
    assert summary.firing == 1 and summary.errors == [f"rule {broken.pk}: boom"]
    assert broken.next_evaluation_at == T0 + timedelta(minutes=5) and "boom" in broken.last_error
    assert [n.subject for n in notifications()] == ["[warning] works: 2.00 USD (today)"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_evaluators_write_one_notification_per_alert_event():
    assert connection.vendor == "postgresql"
    ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def fire() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                alert_fire(
                    key="rule:1:global",
                    source="rule",
                    level="warning",
                    scope="global",
                    title="t",
                    message="m",
                    cooldown=timedelta(hours=1),
                    now=T0,
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Alert.objects.get().notify_count == 1
    assert Notification.objects.count() == 1


def test_a_forecast_to_exceed_fires_once_per_period_and_is_never_called_exceeded(spend, channel):
    BudgetFactory(name="Chat", amount=Decimal("300"), forecast_alerts=True)
    with time_machine.travel(datetime(2026, 11, 11, tzinfo=UTC), tick=False):
        spend("110", datetime(2026, 11, 5, tzinfo=UTC))  # 110 in the 144 hours since the 5th: 475.90 by the end
        alerts_evaluate()
        alerts_evaluate()
    [note] = notifications()
    # 190 more at 110 / 144 an hour: 249 hours after 01:00 on the 11th, on the 21st.
    assert note.subject == "[forecast to exceed] Budget 'Chat' forecast to exceed on 21 Nov: 475.90 USD by period end"
    assert "exceeded" not in note.subject
    alert = Alert.objects.get()
    assert (alert.source, alert.label, alert.level) == ("forecast", "forecast to exceed", "warning")
    with time_machine.travel(datetime(2026, 11, 12, tzinfo=UTC), tick=False):
        spend("200", datetime(2026, 11, 11, 12, tzinfo=UTC))  # now over the limit: the level says it
        alerts_evaluate()
    assert Alert.objects.get(source="forecast").state == "resolved"
    assert Alert.objects.get(source="budget").level == "exceeded"
    assert [n.subject.split("]")[0] for n in notifications()] == ["[forecast to exceed", "[exceeded"]
