"""budget_check keeps the budgets and periods it read and re-reads them only when the definitions'
generation token changes (budgets.selectors._Known, budgets/migrations/0003). These tests make
changes the way users and other processes make them (queryset updates with no signals, deletes,
rollbacks, another connection's commit) and compare every check with a read that keeps nothing."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from budgets import selectors
from budgets.models import Budget, BudgetPeriod
from budgets.services import budget_check, budget_period_close, budget_reserve, reservation_release
from tests.factories import BudgetFactory

NOW = datetime(2026, 11, 15, 12, 30, tzinfo=UTC)
SCOPE = "model:gpt-4o"


def _token() -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM budgets_generation WHERE id = 1")
        row = cursor.fetchone()
    return row[0] if row else None


def _figures(statuses) -> list[tuple]:
    return [
        (
            s.budget.pk,
            s.budget.amount,
            list(s.budget.thresholds),
            s.period.pk,
            s.period.start,
            s.period.closed_at,
            s.spent,
            s.reserved,
            s.limit,
            s.level,
            s.allowed,
        )
        for s in statuses
    ]


def _fresh(amount: str = "1") -> list[tuple]:
    """budget_check with nothing kept (what it answered before budgets were kept)."""
    selectors._KNOWN.clear()
    return _figures(budget_check(scope=SCOPE, amount=amount))


def _checked(amount: str = "1") -> tuple[list[tuple], list[str]]:
    with CaptureQueriesContext(connection) as queries:
        statuses = budget_check(scope=SCOPE, amount=amount)
    return _figures(statuses), [q["sql"] for q in queries.captured_queries]


def _kept_read(sqls: list[str]) -> bool:
    """One statement that reads the sums and the token, not the budgets."""
    return (
        len(sqls) == 1
        and "budgets_generation" in sqls[0]
        and "budgets_budget" not in sqls[0].replace("budgets_budgetperiod", "")
    )


def _warm() -> None:
    budget_check(scope=SCOPE, amount="1")  # opens the periods
    budget_check(scope=SCOPE, amount="1")  # reads everything and keeps it
    assert _kept_read(_checked()[1])


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_a_check_whose_periods_are_kept_reads_only_the_sums_and_sees_new_spend(spend):
    BudgetFactory(scope="global", amount=Decimal("100"))
    BudgetFactory(scope=SCOPE, amount=Decimal("10"), hard_limit=True)
    spend("2", NOW - timedelta(days=3))
    _warm()
    spend("7.5", NOW - timedelta(minutes=5))
    figures, sqls = _checked("1")
    assert _kept_read(sqls)
    assert [f[6] for f in figures] == [Decimal("9.5"), Decimal("9.5")]
    assert [f[10] for f in figures] == [True, False]  # 9.5 + 1 > 10 on the hard limit
    assert figures == _fresh("1")


def _amount(budget: Budget, period: BudgetPeriod) -> None:
    Budget.objects.filter(pk=budget.pk).update(amount=Decimal("3"))


def _thresholds(budget: Budget, period: BudgetPeriod) -> None:
    Budget.objects.filter(pk=budget.pk).update(thresholds=[10, 20, 30, 40])


def _deactivated(budget: Budget, period: BudgetPeriod) -> None:
    Budget.objects.filter(pk=budget.pk).update(is_active=False)


def _deleted(budget: Budget, period: BudgetPeriod) -> None:
    Budget.objects.filter(pk=budget.pk).delete()


def _added(budget: Budget, period: BudgetPeriod) -> None:
    BudgetFactory(scope=SCOPE, amount=Decimal("1"), period="daily")


def _kind_changed(budget: Budget, period: BudgetPeriod) -> None:
    Budget.objects.filter(pk=budget.pk).update(period="weekly")


def _scope_changed(budget: Budget, period: BudgetPeriod) -> None:
    Budget.objects.filter(pk=budget.pk).update(scope="model:gpt-4o-mini")


def _carried(budget: Budget, period: BudgetPeriod) -> None:
    BudgetPeriod.objects.filter(pk=period.pk).update(carried_over=Decimal("4"))


def _closed(budget: Budget, period: BudgetPeriod) -> None:
    budget_period_close(period=period, now=NOW)


def _period_deleted(budget: Budget, period: BudgetPeriod) -> None:
    BudgetPeriod.objects.filter(pk=period.pk).delete()


CHANGES: dict[str, Callable[[Budget, BudgetPeriod], None]] = {
    "amount": _amount,
    "thresholds": _thresholds,
    "deactivated": _deactivated,
    "deleted": _deleted,
    "added": _added,
    "period kind": _kind_changed,
    "scope": _scope_changed,
    "carried over": _carried,
    "period closed": _closed,
    "period deleted": _period_deleted,
}


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_any_change_to_a_budget_or_its_period_is_seen_by_the_next_check(spend, change):
    BudgetFactory(scope="global", amount=Decimal("100"))
    budget = BudgetFactory(scope=SCOPE, amount=Decimal("10"), hard_limit=True)
    spend("2.5", NOW - timedelta(days=1))
    _warm()
    before = _fresh()
    _warm()
    period = BudgetPeriod.objects.get(budget=budget, closed_at__isnull=True)
    token = _token()
    change(budget, period)
    assert _token() != token  # no signals: queryset updates and deletes are seen too

    after, sqls = _checked()
    assert not _kept_read(sqls)
    assert after != before
    assert after == _fresh()


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_a_change_rolled_back_leaves_the_check_as_before(spend):
    budget = BudgetFactory(scope=SCOPE, amount=Decimal("10"))
    spend("2", NOW - timedelta(hours=2))
    _warm()
    before = _checked()[0]
    with pytest.raises(RuntimeError), transaction.atomic():
        Budget.objects.filter(pk=budget.pk).update(amount=Decimal("50"))
        assert [f[8] for f in _checked()[0]] == [Decimal("50")]  # seen inside the transaction
        raise RuntimeError("roll back")
    assert _checked()[0] == before == _fresh()


@pytest.mark.django_db
def test_a_kept_period_that_has_ended_is_not_used(spend):
    budget = BudgetFactory(scope=SCOPE, amount=Decimal("10"), period="daily")
    with time_machine.travel(NOW, tick=False):
        spend("4", NOW - timedelta(hours=1))
        _warm()
    with time_machine.travel(NOW + timedelta(days=1), tick=False):
        [status] = budget_check(scope=SCOPE)
        assert status.period.start == datetime(2026, 11, 16, tzinfo=UTC)
        assert status.spent == 0
        assert BudgetPeriod.objects.filter(budget=budget).count() == 2
        assert _figures([status]) == _fresh()


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_another_time_zone_reads_its_own_periods(settings, spend):
    BudgetFactory(scope=SCOPE, amount=Decimal("10"), period="daily")
    spend("1", NOW - timedelta(hours=13))  # 23:30 on the 14th in UTC, 00:30 on the 15th in Berlin
    _warm()
    assert [f[6] for f in _checked()[0]] == [Decimal("0")]
    settings.TIME_ZONE = "Europe/Berlin"
    budget_check(scope=SCOPE)  # opens Berlin's day
    [figures] = _checked()[0]
    assert figures[4] == datetime(2026, 11, 14, 23, tzinfo=UTC) and figures[6] == Decimal("1")


@pytest.mark.django_db
def test_the_token_changes_with_every_change_of_a_budget_or_period_and_only_then():
    token = _token()
    assert token is not None
    budget = BudgetFactory(scope=SCOPE)
    assert _token() != token
    token = _token()
    period = BudgetPeriod.objects.create(
        budget=budget, start=NOW, end=NOW + timedelta(days=1), limit=Decimal("100"), carried_over=0
    )
    assert _token() == token  # opening a period: a kept position never needs it (see the migration)
    Budget.objects.filter(pk=budget.pk, amount=Decimal("-1")).update(name="nothing matches")
    BudgetPeriod.objects.filter(pk=period.pk, peak_level="exceeded").update(peak_level="info")
    assert _token() == token  # statements that change no row
    BudgetPeriod.objects.filter(pk=period.pk).update(peak_level="info")
    assert _token() != token
    token = _token()
    BudgetPeriod.objects.filter(pk=period.pk).delete()
    assert _token() != token
    token = _token()
    budget.delete()
    assert _token() != token


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_kept_checks_answer_as_fresh_ones_through_random_changes(spend, gpt4o_prices):
    rng = random.Random(20261123)
    budgets = [
        BudgetFactory(scope="global", amount=Decimal("200")),
        BudgetFactory(scope=SCOPE, amount=Decimal("50"), hard_limit=True, rollover=True),
        BudgetFactory(scope=SCOPE, amount=Decimal("500"), period="none"),
    ]
    held = []
    kept = 0
    for step in range(60):
        action = rng.choice(["spend", "spend", "check", "check", "amount", "reserve", "release", "add", "toggle"])
        if action == "spend":
            spend(str(Decimal(rng.randint(1, 300)) / 100), NOW - timedelta(hours=rng.randint(0, 300)))
        elif action == "amount":
            Budget.objects.filter(pk=rng.choice(budgets).pk).update(amount=Decimal(rng.randint(1, 100)))
        elif action == "reserve":
            held += budget_reserve(scopes=[SCOPE], amount=Decimal("0.5")) if rng.random() < 0.9 else []
        elif action == "release" and held:
            reservation_release(reservation=held.pop(rng.randrange(len(held))))
        elif action == "add":
            budgets.append(BudgetFactory(scope=rng.choice([SCOPE, "global"]), amount=Decimal(rng.randint(1, 100))))
        elif action == "toggle":
            chosen = rng.choice(budgets)
            Budget.objects.filter(pk=chosen.pk).update(is_active=rng.random() < 0.5)
        amount = str(Decimal(rng.randint(0, 5000)) / 100)
        figures, sqls = _checked(amount)
        kept += _kept_read(sqls)
        assert figures == _fresh(amount), f"step {step} after {action}"
    assert kept >= 10  # the kept path was exercised, not only the full read


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_change_committed_by_another_connection_is_seen_at_once(gpt4o_prices):
    assert connection.vendor == "postgresql"
    budget = BudgetFactory(scope=SCOPE, amount=Decimal("10"))
    with time_machine.travel(NOW, tick=False):
        _warm()
        errors: list[BaseException] = []

        def elsewhere() -> None:
            try:
                Budget.objects.filter(pk=budget.pk).update(amount=Decimal("77"))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
            finally:
                connections.close_all()

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(timeout=30)
        assert not errors
        [status] = budget_check(scope=SCOPE)
        assert status.limit == Decimal("77")
