from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction

import budgets.services
from budgets.models import Reservation, ReservationStatus
from budgets.selectors import budget_check
from budgets.services import (
    BudgetExceeded,
    budget_period_current,
    budget_reserve,
    reservation_settle,
    reservations_expire,
)
from tests.factories import BudgetFactory, status_of
from tracking.selectors import ledger_differences, spend_total
from tracking.services import cost_entry_record

NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_a_reservation_holds_room_until_settled_and_a_denial_names_the_budget(spend):
    budget = BudgetFactory(name="Image API", scope="service:image-api", amount=Decimal("10"), hard_limit=True)
    spend("4", NOW, service="image-api")
    [held] = budget_reserve(scopes=["service:image-api"], amount=Decimal("5"))
    assert held.status == ReservationStatus.ACTIVE
    assert status_of(budget).reserved == Decimal("5")
    with pytest.raises(BudgetExceeded, match=r"'Image API' \(service:image-api\) has 1.00 USD left") as excinfo:
        budget_reserve(scopes=["service:image-api"], amount=Decimal("2"))
    assert excinfo.value.available == Decimal("1")
    assert Reservation.objects.count() == 1  # the denial saved nothing

    with transaction.atomic():
        spend("4.5", NOW, service="image-api")
        reservation_settle(reservation=held, actual=Decimal("4.5"))
    held.refresh_from_db()
    assert (held.status, held.actual) == (ReservationStatus.SETTLED, Decimal("4.5"))
    status = status_of(budget)
    assert (status.spent, status.reserved) == (Decimal("8.5"), Decimal("0"))
    assert budget_reserve(scopes=["service:image-api"], amount=Decimal("1.5"))
    with pytest.raises(ValidationError, match="already settled"):
        reservation_settle(reservation=held, actual=Decimal("1"))


@pytest.mark.django_db
def test_an_unsettled_reservation_expires_and_releases_its_amount(settings):
    settings.BUDGET_RESERVATION_TTL_SECONDS = 600
    budget = BudgetFactory(amount=Decimal("10"), hard_limit=True)
    with time_machine.travel(NOW, tick=False):
        [held] = budget_reserve(scopes=["provider:openai"], amount=Decimal("8"))
        assert held.expires_at == NOW + timedelta(minutes=10)
        assert not budget_check(scope="provider:openai", amount=Decimal("3"))[0].allowed
    with time_machine.travel(NOW + timedelta(minutes=10), tick=False):
        assert held.status == ReservationStatus.EXPIRED
        assert status_of(budget).reserved == Decimal("0")
        assert budget_check(scope="provider:openai", amount=Decimal("3"))[0].allowed
        assert reservations_expire() == 1
        assert reservations_expire() == 0
    held.refresh_from_db()
    assert held.status == ReservationStatus.RELEASED


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_soft_budgets_take_no_reservations_and_bad_amounts_are_refused():
    BudgetFactory(amount=Decimal("1"))
    assert budget_reserve(scopes=["provider:openai"], amount=Decimal("5")) == []
    with pytest.raises(ValidationError) as excinfo:
        budget_reserve(scopes=["provider:openai"], amount=Decimal("-1"))
    assert "amount" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        budget_reserve(scopes=["provider:openai"], amount=0.5)
    assert "amount" in excinfo.value.message_dict


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_reservers_against_room_for_three_admit_exactly_three(gpt4o_prices, monkeypatch):
    assert connection.vendor == "postgresql"

    def slow_budget_statuses(*args, **kwargs):
        # Take a while between reading the room and inserting the reservation: without the budget
        # lock every reserver would read before any of them commits, and all eight would be admitted.
        statuses = real_budget_statuses(*args, **kwargs)
        time.sleep(0.05)
        return statuses

    real_budget_statuses = budgets.services.budget_statuses
    monkeypatch.setattr(budgets.services, "budget_statuses", slow_budget_statuses)
    budget = BudgetFactory(scope="service:batch", amount=Decimal("10"), hard_limit=True)
    estimate, actual = Decimal("3.000000001"), Decimal("2.999999999")  # room for exactly 3 estimates
    budget_period_current(budget=budget)  # opened beforehand, so the threads race on the check, not the insert
    barrier = threading.Barrier(8)
    admitted: list[int] = []
    denied: list[int] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            barrier.wait()
            try:
                [held] = budget_reserve(scopes=["service:batch"], amount=estimate)
            except BudgetExceeded:
                denied.append(n)
                return
            admitted.append(n)
            with transaction.atomic():
                cost_entry_record(
                    provider="openai", model="gpt-4o", service="batch", amount=str(actual), idempotency_key=f"conc-{n}"
                )
                reservation_settle(reservation=held, actual=actual)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(admitted) == 3 and len(denied) == 5
    status = status_of(budget)
    assert status.spent == actual * 3 <= status.limit
    assert status.reserved == 0
    assert ledger_differences()[0] == []
    assert spend_total(scope="service:batch", start=status.period.start, end=status.period.end) == status.spent
