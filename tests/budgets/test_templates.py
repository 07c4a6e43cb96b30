"""Budget templates: one budget for each value of a kind (each end user, job, customer tag, team)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection, connections, transaction

from alerts.evaluation import alerts_evaluate
from alerts.models import Alert, AlertState, Notification
from budgets.models import Budget, BudgetPeriod, Reservation
from budgets.selectors import budget_check, template_summary
from budgets.services import (
    BudgetExceeded,
    budget_period_current,
    budget_reserve,
    budget_value_periods_close,
    reservation_settle,
)
from budgets.templates import budget_override_clear, budget_override_set, budgets_of
from core.models import Team
from tests.factories import BudgetFactory, ChannelFactory, status_of
from tracking.models import CostEntry
from tracking.selectors import entry_scope_q, ledger_differences, scope_totals, spend_total
from tracking.services import cost_entry_record

NOW = datetime(2026, 11, 10, 12, 30, tzinfo=UTC)


def values_of(template: Budget) -> dict[str, Budget]:
    return {b.value: b for b in Budget.objects.filter(template=template)}


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_a_check_refuses_alice_over_her_limit_while_bob_still_has_room(spend):
    template = BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("5"), period="daily", hard_limit=True)
    spend("4.50", NOW, subject="alice")
    spend("1", NOW, subject="bob")

    [alice] = budget_check(scope="subject:alice", amount=Decimal("1"))
    [bob] = budget_check(scope="subject:bob", amount=Decimal("1"))

    assert (alice.allowed, alice.spent, alice.limit) == (False, Decimal("4.50"), Decimal("5"))
    assert (bob.allowed, bob.spent) == (True, Decimal("1"))
    assert alice.budget.name == "Per user: alice" and alice.budget.template == template
    assert set(values_of(template)) == {"alice", "bob"}  # created on first use, not for every value
    assert budget_check(scope="subject:alice")[0].budget == alice.budget  # the same one next time
    assert Budget.objects.filter(template=template).count() == 2


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_a_value_with_its_own_amount_wins_over_the_template_and_a_plain_budget_applies_beside_it(spend):
    template = BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("5"), period="daily", hard_limit=True)
    spend("20", NOW, subject="alice")
    alice = budget_override_set(template=template, value="alice", amount="50")

    [status] = budget_check(scope="subject:alice", amount=Decimal("10"))
    assert (status.budget, status.limit, status.allowed) == (alice, Decimal("50"), True)

    # A plain budget on the same scope applies beside the template's: the stricter hard limit wins.
    plain = BudgetFactory(name="Alice cap", scope="subject:alice", amount=Decimal("25"), hard_limit=True)
    statuses = {s.budget: s for s in budget_check(scope="subject:alice", amount=Decimal("10"))}
    assert set(statuses) == {alice, plain}
    assert statuses[alice].allowed and not statuses[plain].allowed
    with pytest.raises(BudgetExceeded, match="Alice cap"):
        budget_reserve(scopes=["subject:alice"], amount=Decimal("10"))

    # The template's changes reach its values; the own amount stays.
    template.amount, template.thresholds = Decimal("8"), [90, 100]
    template.save()
    bob = budget_check(scope="subject:bob")[0].budget
    alice.refresh_from_db()
    assert (bob.amount, bob.thresholds) == (Decimal("8"), [90, 100])
    assert (alice.amount, alice.thresholds, alice.override) == (Decimal("50"), [90, 100], True)
    template.amount = Decimal("9")
    template.save()
    bob.refresh_from_db()
    alice.refresh_from_db()
    assert (bob.amount, alice.amount) == (Decimal("9"), Decimal("50"))

    assert budget_override_clear(budget=alice).amount == Decimal("9")
    with pytest.raises(ValidationError) as caught:
        budget_override_set(template=template, value="bob", amount="-1")
    assert "amount" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        budget_override_set(template=template, value=" ", amount="1")
    assert "value" in caught.value.message_dict


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_a_team_template_covers_its_teams_values_only_and_refuses_another_teams(spend):
    ml, web = Team.objects.create(name="ml"), Team.objects.create(name="web")
    template = BudgetFactory(name="ML users", scope="team:ml/subject:*", amount=Decimal("5"), team=ml, hard_limit=True)
    template.full_clean()
    spend("6", NOW, subject="alice", team=ml)
    spend("6", NOW, subject="carol", team=web)

    [alice] = budget_check(scope="team:ml/subject:alice", amount=Decimal("0"))
    assert not alice.allowed and alice.budget.team == ml
    assert budget_check(scope="team:web/subject:carol") == []  # not ml's value: no template applies
    assert budget_check(scope="subject:carol") == []

    stray = Budget(name="x", scope="team:web/subject:carol", template=template, team=ml, amount=Decimal("1"))
    with pytest.raises(ValidationError) as caught:
        stray.full_clean()
    assert "scope" in caught.value.message_dict
    web_template = Budget(name="Web users", scope="team:ml/subject:*", team=web, amount=Decimal("5"))
    with pytest.raises(ValidationError, match="team web may only watch its own spend"):
        web_template.full_clean()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("tag:=*", "tag:KEY=*"),
        ("operation:*", "each value of one of"),
        ("team:*/subject:*", "narrow a template to one team"),
    ],
)
def test_a_template_on_a_kind_without_values_is_refused_naming_the_scope(scope, message):
    with pytest.raises(ValidationError) as caught:
        Budget(name="t", scope=scope, amount=Decimal("5")).full_clean()
    assert message in " ".join(caught.value.message_dict["scope"])


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_each_tag_value_and_each_team_have_their_own_budget(spend):
    ml = Team.objects.create(name="ml")
    customers = BudgetFactory(name="Per customer", scope="tag:customer=*", amount=Decimal("10"), hard_limit=True)
    teams = BudgetFactory(name="Per team", scope="team:*", amount=Decimal("3"), hard_limit=True)
    spend("4", NOW, tags={"customer": "acme"}, team=ml)

    [acme] = [s for s in budget_check(scope="tag:customer=acme", amount=Decimal("7")) if s.budget.template]
    assert (acme.budget.template, acme.budget.value, acme.allowed) == (customers, "acme", False)
    [team] = budget_check(scope="team:ml", amount=Decimal("0"))
    assert (team.budget.template, team.budget.value, team.allowed) == (teams, "ml", False)


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_reserve_and_settle_per_value(spend):
    BudgetFactory(name="Per job", scope="job:*", amount=Decimal("20"), hard_limit=True)
    [held] = budget_reserve(scopes=["job:j1"], amount=Decimal("15"))
    assert held.budget.value == "j1"
    with pytest.raises(BudgetExceeded, match="'Per job: j1'"):
        budget_reserve(scopes=["job:j1"], amount=Decimal("6"))
    assert budget_reserve(scopes=["job:j2"], amount=Decimal("6"))  # j2 has its own 20
    with transaction.atomic():
        spend("14", NOW, job="j1")
        reservation_settle(reservation=held, actual=Decimal("14"))
    assert budget_reserve(scopes=["job:j1"], amount=Decimal("6"))
    assert Reservation.objects.count() == 3


@pytest.mark.django_db
def test_the_alert_pass_evaluates_the_values_that_spent_and_names_the_value(spend):
    channel = ChannelFactory(name="ops", is_default=True)
    with time_machine.travel(NOW, tick=False):
        template = BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("5"), period="daily")
        template.channels.add(channel)
        spend("4.50", NOW, subject="alice")
        spend("1", NOW, subject="bob")
        summary = alerts_evaluate(budgets_only=True)
    assert summary.budgets == 2  # the two values that spent, no more
    [alert] = Alert.objects.filter(state=AlertState.FIRING)
    assert alert.budget.value == "alice" and alert.level == "warning"
    assert "Per user: alice" in alert.title
    [told] = Notification.objects.filter(alert=alert)
    assert told.channel == channel  # the template's channels
    template.refresh_from_db()
    assert template.evaluated_until == NOW

    # A pass reads the values that spent since the hour of the pass before it.
    later = NOW + timedelta(hours=2)
    with time_machine.travel(later, tick=False):
        assert alerts_evaluate(budgets_only=True).budgets == 2  # alice and bob spent in the last pass's hour
    with time_machine.travel(later + timedelta(minutes=1), tick=False):
        spend("1", later, subject="carol")
        summary = alerts_evaluate(budgets_only=True)
    assert summary.budgets == 2  # carol spent; alice has an alert firing; bob is left alone
    assert Notification.objects.count() == 1  # a level is told once per period


@pytest.mark.django_db
def test_many_values_crossing_at_once_are_told_in_one_digest(spend, settings):
    settings.BUDGET_DIGEST_AFTER = 10
    ChannelFactory(name="ops", is_default=True)
    template = BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("5"), period="daily")
    with time_machine.travel(NOW, tick=False):
        for n in range(30):
            spend(str(Decimal("4.10") + Decimal(n) / 100), NOW, subject=f"user{n:02}")
        spend("1", NOW, subject="quiet")
        alerts_evaluate(budgets_only=True)
    assert Alert.objects.filter(state=AlertState.FIRING, budget__template=template).count() == 30
    [digest] = Notification.objects.all()
    assert digest.alert is None
    assert digest.subject == "[warning] Budget 'Per user': 30 values warning"
    assert "- user29: 87.80 % (4.39 USD of 5.00 USD)" in digest.text
    assert "... and 20 more" in digest.text
    assert digest.payload["digest"]["count"] == 30
    # Told: the values' alerts are not told again one by one.
    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        alerts_evaluate(budgets_only=True)
    assert Notification.objects.count() == 1


@pytest.mark.django_db
def test_the_periods_of_values_close_in_resumable_batches_and_carry_over_per_value(spend):
    template = BudgetFactory(scope="subject:*", amount=Decimal("5"), period="daily", rollover=True)
    day1 = datetime(2026, 11, 10, 12, tzinfo=UTC)
    with time_machine.travel(day1, tick=False):
        for name, amount in (("alice", "1"), ("bob", "4"), ("carol", "6")):
            spend(amount, day1, subject=name)
            budget_period_current(budget=budget_check(scope=f"subject:{name}")[0].budget)  # opened on use
    assert BudgetPeriod.objects.filter(closed_at__isnull=True).count() == 3
    day2 = day1 + timedelta(days=1)
    # One batch of one, then the rest: stopped half-way, the next run goes on.
    assert budget_value_periods_close(now=day2, chunk=1) == 3
    assert budget_value_periods_close(now=day2) == 0
    closed = {p.budget.value: p for p in BudgetPeriod.objects.select_related("budget")}
    assert {v: p.spent_at_close for v, p in closed.items()} == {
        "alice": Decimal("1"),
        "bob": Decimal("4"),
        "carol": Decimal("6"),
    }
    assert closed["carol"].peak_level == "exceeded"
    with time_machine.travel(day2, tick=False):
        limits = {v: status_of(b, forecasts=False).limit for v, b in values_of(template).items()}
    assert limits == {"alice": Decimal("9"), "bob": Decimal("6"), "carol": Decimal("5")}


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_a_template_summary_counts_levels_and_ranks_values(spend):
    template = BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("10"), period="daily")
    for name, amount in (("alice", "9.6"), ("bob", "8.5"), ("carol", "6"), ("dave", "12")):
        spend(amount, NOW, subject=name)
    budget_override_set(template=template, value="dave", amount="100")
    assert [s.budget.value for s in template_summary(template).top] == ["dave"]  # the only one with a budget
    alerts_evaluate(budgets_only=True)  # gives each value that spent its budget; a summary writes nothing
    summary = template_summary(template, top=2)
    assert summary.spending == 4 and summary.overrides == 1
    assert summary.levels == {"ok": 1, "info": 1, "warning": 1, "critical": 1, "exceeded": 0}
    assert [s.budget.value for s in summary.top] == ["alice", "bob"]
    assert [s.budget.value for s in template_summary(template, search="CAR").top] == ["carol"]

    out = StringIO()
    call_command("budget_status", stdout=out)
    assert "Per user [subject:*, daily, template]: 10.00 USD each" in out.getvalue()
    assert "highest: alice 96.00%" in out.getvalue()


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_with_cost_monitoring_off_nothing_is_checked_held_or_raised(spend, settings):
    settings.ENABLE_COST_MONITORING = False
    BudgetFactory(scope="subject:*", amount=Decimal("1"), hard_limit=True)
    BudgetFactory(scope="global", amount=Decimal("1"), hard_limit=True)
    spend("5", NOW, subject="alice")  # recorded all the same
    assert budget_check(scope="subject:alice", amount=Decimal("1")) == []
    assert budget_reserve(scopes=["subject:alice"], amount=Decimal("1")) == []
    assert alerts_evaluate().budgets == 0
    assert Alert.objects.count() == 0
    assert spend_total(scope="subject:alice", start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1)) == 5


@pytest.mark.django_db
def test_budgets_of_reads_one_statement_once_every_value_has_its_budget(django_assert_num_queries):
    BudgetFactory(scope="subject:*", amount=Decimal("5"))
    budgets_of(scopes=["subject:alice"], is_active=True)
    with django_assert_num_queries(1):
        [alice] = budgets_of(scopes=["subject:alice"], is_active=True)
    assert alice.value == "alice"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_writers_spending_for_200_new_values_are_each_held_exactly_to_their_limit(gpt4o_prices):
    """8 concurrent writers spend for 200 values no budget has seen yet, under a per-value hard limit
    of room for exactly 3 calls each: every value is admitted exactly 3 times, one budget per value,
    and ledger = rollups = every value's spent."""
    assert connection.vendor == "postgresql"
    template = BudgetFactory(name="Per user", scope="subject:*", amount=Decimal("9"), hard_limit=True)
    estimate = actual = Decimal("3")
    values = [f"user{n:03}" for n in range(200)]
    admitted: dict[str, int] = dict.fromkeys(values, 0)
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        try:
            barrier.wait()
            # Each writer goes through every value, in its own order, 4 tries each: 32 tries a value.
            for attempt in range(4):
                for value in values[n * 25 :] + values[: n * 25]:
                    try:
                        [held] = budget_reserve(scopes=[f"subject:{value}"], amount=estimate)
                    except BudgetExceeded:
                        continue
                    with transaction.atomic():
                        cost_entry_record(
                            provider="openai",
                            model="gpt-4o",
                            subject=value,
                            amount=str(actual),
                            idempotency_key=f"tmpl-{n}-{attempt}-{value}",
                        )
                        reservation_settle(reservation=held, actual=actual)
                    with lock:
                        admitted[value] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert set(admitted.values()) == {3}
    assert Budget.objects.filter(template=template).count() == 200
    assert BudgetPeriod.objects.filter(budget__template=template).count() == 200
    assert ledger_differences()[0] == []
    for value, budget in values_of(template).items():
        status = status_of(budget, forecasts=False)
        assert (
            status.spent
            == Decimal("9")
            == spend_total(scope=f"subject:{value}", start=status.period.start, end=status.period.end)
        )


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_a_template_narrowed_to_a_service_covers_that_services_jobs_and_counts_only_its_spend(spend):
    template = BudgetFactory(name="ETL jobs", scope="service:etl/job:*", amount=Decimal("20"), hard_limit=True)
    template.full_clean()
    spend("15", NOW, service="etl", job="j1")
    spend("30", NOW, service="web", job="j1")  # the same job id elsewhere: not ETL's spend

    [j1] = budget_check(scope="service:etl/job:j1", amount=Decimal("5"))
    assert (j1.budget.template, j1.budget.value, j1.spent, j1.allowed) == (template, "j1", Decimal("15"), True)
    assert not budget_check(scope="service:etl/job:j1", amount=Decimal("6"))[0].allowed
    assert budget_check(scope="service:web/job:j1") == []  # another service's jobs are not covered
    assert budget_check(scope="job:j1") == []
    with pytest.raises(BudgetExceeded, match="'ETL jobs: j1'"):
        budget_reserve(scopes=["service:etl/job:j1"], amount=Decimal("6"))

    # The alert pass finds ETL's jobs that spent; a list of every service leaves the copies out.
    spend("19.5", NOW, service="etl", job="j2")
    alerts_evaluate(budgets_only=True)
    assert set(values_of(template)) == {"j1", "j2"}
    by_service = scope_totals(start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1), prefixes=["service:"])
    assert set(by_service) == {"service:etl", "service:web"}
    assert CostEntry.objects.filter(entry_scope_q("service:etl/job:j1")).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("scope", "message"),
    [("service:etl/model:*", "a service narrows only subjects or jobs"), ("service: etl/job:*", "surrounding spaces")],
)
def test_a_service_narrows_only_subjects_and_jobs(scope, message):
    with pytest.raises(ValidationError) as caught:
        Budget(name="t", scope=scope, amount=Decimal("5")).full_clean()
    assert message in " ".join(caught.value.message_dict["scope"])
