"""A reservation belongs to the service whose key made it; a released one cannot be settled (issue 18)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from api.keys import api_key_issue
from budgets.models import Reservation
from budgets.selectors import budget_check
from tests.factories import BudgetFactory

pytestmark = pytest.mark.django_db


def post(client, plaintext: str, path: str, body: object):
    return client.post(
        f"/api/v1{path}", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {plaintext}"
    )


@pytest.fixture
def hard_limit(db):
    return BudgetFactory(name="Shared", scope="global", amount=Decimal("10"), hard_limit=True)


def test_another_services_key_can_neither_release_nor_settle_a_reservation(client, hard_limit):
    owner = api_key_issue(name="a", service="svc-a").plaintext
    unrestricted_other = api_key_issue(name="b", service="svc-b").plaintext
    restricted_other = api_key_issue(name="b2", service="svc-b", scopes=["service:svc-b", "global"]).plaintext
    [held] = post(client, owner, "/budgets/reserve", {"scopes": ["service:svc-a"], "amount": "8"}).json()[
        "reservations"
    ]

    for plaintext in (unrestricted_other, restricted_other):
        released = post(client, plaintext, f"/reservations/{held['id']}/release", {})
        assert released.status_code == 403 and "belongs to service 'svc-a'" in released.json()["message"]
        settled = post(client, plaintext, f"/reservations/{held['id']}/settle", {"actual": "0"})
        assert settled.status_code == 403
    assert Reservation.objects.get(pk=held["id"]).status == "active"
    [status] = budget_check(scope="global", amount=Decimal("3"))
    assert status.allowed is False  # svc-a's hold still counts: nobody freed its headroom


def test_a_key_restricted_to_its_service_settles_its_own_reservation_on_a_global_budget(client, hard_limit):
    owner = api_key_issue(name="a", service="svc-a", scopes=["service:svc-a"]).plaintext
    [held] = post(client, owner, "/budgets/reserve", {"scopes": ["service:svc-a"], "amount": "2"}).json()[
        "reservations"
    ]
    assert held["budget"] == "Shared"
    assert post(client, owner, f"/reservations/{held['id']}/settle", {"actual": "1"}).status_code == 200


def test_a_released_reservation_cannot_be_settled(client, hard_limit):
    owner = api_key_issue(name="a", service="svc-a").plaintext
    [held] = post(client, owner, "/budgets/reserve", {"scopes": ["service:svc-a"], "amount": "2"}).json()[
        "reservations"
    ]
    assert post(client, owner, f"/reservations/{held['id']}/release", {}).status_code == 200

    settled = post(client, owner, f"/reservations/{held['id']}/settle", {"actual": "1"})
    assert settled.status_code == 409 and "already released" in settled.json()["message"]
    reservation = Reservation.objects.get(pk=held["id"])
    assert reservation.status == "released" and reservation.actual is None
