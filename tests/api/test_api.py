"""The HTTP API: auth, exactly-once ingest, partial batches, every error case, budgets and spend."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from api.keys import api_key_issue, api_key_revoke
from budgets.models import Reservation
from tests.factories import BudgetFactory
from tracking.models import CostEntry, SpendRollup
from tracking.selectors import ledger_differences

pytestmark = pytest.mark.django_db

EVENT = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100}


def event(key: str, **fields: object) -> dict:
    return {**EVENT, "idempotency_key": key, **fields}


def bearer(plaintext: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


# --- auth ----------------------------------------------------------------------------------------


def test_no_key_a_wrong_key_a_revoked_or_expired_key_get_401(client, api_key, gpt4o_prices):
    body = json.dumps(event("k1"))
    post = lambda **h: client.post("/api/v1/events", body, content_type="application/json", **h)  # noqa: E731
    assert post().status_code == 401
    assert post(**bearer("cc_nothere_secret")).status_code == 401
    wrong_secret = api_key.plaintext[:-3] + "xyz"
    response = post(**bearer(wrong_secret))
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert post(**bearer(api_key.plaintext)).status_code == 201
    api_key_revoke(key=api_key.key)
    assert post(**bearer(api_key.plaintext)).status_code == 401
    expired = api_key_issue(name="old", service="image-api", expires_at=timezone.now() - timedelta(seconds=1))
    assert post(**bearer(expired.plaintext)).status_code == 401
    assert CostEntry.objects.count() == 1


def test_the_key_is_stored_hashed_and_shown_once(api_key):
    key = api_key.key
    assert api_key.plaintext.startswith(f"cc_{key.prefix}_")
    secret = api_key.plaintext.split("_", 2)[2]
    assert secret not in key.hashed and secret not in key.salt and len(key.hashed) == 64


def test_a_key_used_outside_its_scopes_or_its_service_gets_403(client, gpt4o_prices):
    issued = api_key_issue(name="narrow", service="image-api", scopes=["service:image-api"])
    h = bearer(issued.plaintext)
    check = lambda scope: client.post(  # noqa: E731
        "/api/v1/budgets/check", json.dumps({"scope": scope}), content_type="application/json", **h
    )
    assert check("service:image-api").status_code == 200
    response = check("global")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    other = client.post(
        "/api/v1/events", json.dumps(event("x", service="billing")), content_type="application/json", **h
    )
    assert other.status_code == 403 and "records for service 'image-api' only" in other.json()["message"]
    spend = client.get(
        "/api/v1/spend", {"scope": "global", "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}, **h
    )
    assert spend.status_code == 403
    assert CostEntry.objects.count() == 0


def test_the_admin_creates_a_key_shows_it_once_and_revokes_it(admin_client, client, gpt4o_prices):
    response = admin_client.post(
        "/admin/api/apikey/add/",
        {"name": "lambda", "service": "chat-api", "scopes": "service:chat-api, global", "rate_limit_per_minute": ""},
    )
    plaintext = response.context["plaintext"]  # shown in that page only (tests/api/test_key_secret.py)
    assert plaintext.startswith("cc_") and plaintext in response.content.decode()
    from api.models import ApiKey

    key = ApiKey.objects.get(name="lambda")
    assert (
        key.scopes == ["service:chat-api", "global"]
        and plaintext not in admin_client.get(f"/admin/api/apikey/{key.pk}/change/").content.decode()
    )
    ok = client.post("/api/v1/events", json.dumps(event("a")), content_type="application/json", **bearer(plaintext))
    assert ok.status_code == 201 and CostEntry.objects.get().service == "chat-api"
    admin_client.post("/admin/api/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    again = client.post("/api/v1/events", json.dumps(event("b")), content_type="application/json", **bearer(plaintext))
    assert again.status_code == 401


# --- exactly once ---------------------------------------------------------------------------------


def test_a_single_event_is_priced_and_a_repeat_is_a_duplicate(api, gpt4o_prices):
    first = api.post("/events", event("same"))
    assert first.status_code == 201
    body = first.json()
    assert body["status"] == "accepted" and body["pricing_status"] == "priced"
    assert Decimal(body["amount"]) == Decimal("0.0035")  # 1000 x 2.50/M + 100 x 10/M
    again = api.post("/events", event("same"))
    assert again.status_code == 200 and again.json() == {**body, "status": "duplicate"}
    assert CostEntry.objects.count() == 1


def test_the_same_batch_posted_twice_is_counted_once(api, gpt4o_prices):
    batch = {"events": [event(f"b{i}", subject=f"user-{i % 3}") for i in range(50)]}
    first = api.post("/events", batch).json()
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (50, 0, 0)
    second = api.post("/events", batch).json()
    assert (second["accepted"], second["duplicates"]) == (0, 50)
    assert [r["id"] for r in first["results"]] == [r["id"] for r in second["results"]]
    assert CostEntry.objects.count() == 50
    assert SpendRollup.objects.get(scope="global").events == 50
    assert ledger_differences()[0] == []


def test_idempotency_keys_are_per_service(client, gpt4o_prices):
    a = api_key_issue(name="a", service="svc-a").plaintext
    b = api_key_issue(name="b", service="svc-b").plaintext
    for plaintext in (a, b, a):
        client.post("/api/v1/events", json.dumps(event("k")), content_type="application/json", **bearer(plaintext))
    assert sorted(CostEntry.objects.values_list("service", flat=True)) == ["svc-a", "svc-b"]


def test_a_partly_invalid_batch_keeps_the_valid_events_and_names_each_error(api, gpt4o_prices):
    items = [
        event("ok-1"),
        event("neg", input_tokens=-5),
        {**EVENT},  # no idempotency key
        "not an object",
        event("future", occurred_at=(timezone.now() + timedelta(minutes=10)).isoformat()),
        event("currency", amount="1.00", currency="XXQ"),
        event("ok-2", amount="0.5", currency="EUR"),
        event("dup-in-batch"),
        event("dup-in-batch"),
    ]
    body = api.post("/events", {"events": items}).json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
        "accepted",
        "duplicate",
    ]
    errors = [r["errors"] for r in body["results"]]
    assert "input_tokens" in errors[1] and "idempotency_key" in errors[2] and "__all__" in errors[3]
    assert "occurred_at" in errors[4] and "future" in errors[4]["occurred_at"][0]
    assert "currency" in errors[5]
    assert CostEntry.objects.count() == 3 and ledger_differences()[0] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**EVENT, "input_tokens": "1000"}, "input_tokens"),  # a string is not a count
        ({**EVENT, "input_tokens": 1.5}, "input_tokens"),
        ({**EVENT, "output_tokens": -1}, "output_tokens"),
        ({**EVENT, "amount": "NaN"}, "amount"),
        ({**EVENT, "amount": "Infinity"}, "amount"),
        ({**EVENT, "amount": "0.0000000001"}, "amount"),  # beyond the column's 9 places
        ({**EVENT, "amount": "1e30"}, "amount"),  # beyond the column's range
        ({**EVENT, "seconds": "-3"}, "seconds"),
        ({**EVENT, "amount": "1", "currency": "ZZZ"}, "currency"),
        ({**EVENT, "occurred_at": "2026-11-23T10:00:00"}, "occurred_at"),  # no offset
        ({**EVENT, "occurred_at": "yesterday"}, "occurred_at"),
        ({**EVENT, "outcome": "maybe"}, "outcome"),
        ({**EVENT, "tags": {"env": 5}}, "tags.env"),
        ({**EVENT, "colour": "red"}, "colour"),
        ({"model": "gpt-4o"}, "provider"),
        ({**EVENT, "provider": "nobody-knows"}, "provider"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(api, gpt4o_prices, body, field):
    response = api.post("/events", body)
    assert response.status_code == 422, response.content
    payload = response.json()
    assert payload["code"] == "invalid" and field in payload["errors"], payload
    assert payload["message"].startswith(field)
    assert CostEntry.objects.count() == 0 and SpendRollup.objects.count() == 0


def test_malformed_json_nan_literals_and_non_objects_get_400(api, gpt4o_prices):
    assert api.post("/events", "{not json").json()["code"] == "malformed_json"
    nan = api.post("/events", '{"provider": "openai", "model": "gpt-4o", "amount": NaN}')
    assert nan.status_code == 400 and nan.json()["code"] == "malformed_json"
    assert api.post("/events", "[1, 2]").status_code == 400
    assert api.post("/events", {"events": "nope"}).status_code == 400


def test_more_than_1000_events_get_413_and_nothing_is_written(api, gpt4o_prices):
    response = api.post("/events", {"events": [event(f"e{i}") for i in range(1001)]})
    assert response.status_code == 413 and response.json()["code"] == "batch_too_large"
    assert "1001" in response.json()["message"] and CostEntry.objects.count() == 0


def test_an_event_without_usage_is_unpriced_not_zero(api, gpt4o_prices):
    body = api.post("/events", {"provider": "openai", "model": "gpt-4o", "usage_unavailable": True}).json()
    assert body["pricing_status"] == "unpriced"


def test_over_the_per_key_rate_limit_requests_get_429_with_retry_after(client, gpt4o_prices):
    issued = api_key_issue(name="slow", service="svc", rate_limit_per_minute=3)
    # All five inside one minute window (a real clock could cross a minute boundary mid-test).
    with time_machine.travel(datetime.now(UTC).replace(second=10), tick=False):
        answers = [
            client.post(
                "/api/v1/events",
                json.dumps(event(f"r{i}")),
                content_type="application/json",
                **bearer(issued.plaintext),
            )
            for i in range(5)
        ]
    assert [a.status_code for a in answers] == [201, 201, 201, 429, 429]
    assert answers[3].json()["code"] == "rate_limited" and 1 <= int(answers[3]["Retry-After"]) <= 61
    assert CostEntry.objects.count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_posts_of_the_same_key_are_counted_once(gpt4o_prices):
    assert connection.vendor == "postgresql"
    issued = api_key_issue(name="c", service="svc")
    barrier = threading.Barrier(2)
    answers: list[int] = []

    def post() -> None:
        try:
            barrier.wait()
            response = Client().post(
                "/api/v1/events",
                json.dumps({"events": [event(f"shared-{i}") for i in range(200)]}),
                content_type="application/json",
                **bearer(issued.plaintext),
            )
            answers.append(response.json()["accepted"])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) in ([0, 200], [200, 0]) or sum(answers) == 200
    assert CostEntry.objects.count() == 200 and ledger_differences()[0] == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lost_database_connection_answers_503_with_retry_after(gpt4o_prices):
    issued = api_key_issue(name="c", service="svc")
    client = Client()
    assert (
        client.post(
            "/api/v1/events", json.dumps(event("up")), content_type="application/json", **bearer(issued.plaintext)
        ).status_code
        == 201
    )
    # Kill this thread's connection from another one: the next statement fails mid-request.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    import psycopg

    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"],
        user=settings_dict["USER"],
        password=settings_dict["PASSWORD"],
        dbname=settings_dict["NAME"],
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    connection.settings_dict["CONN_HEALTH_CHECKS"] = False  # keep the dead connection for this request
    try:
        down = client.post(
            "/api/v1/events", json.dumps(event("down")), content_type="application/json", **bearer(issued.plaintext)
        )
    finally:
        connection.settings_dict["CONN_HEALTH_CHECKS"] = True
    assert down.status_code == 503 and down["Retry-After"] == "5" and down.json()["code"] == "unavailable"
    connection.close()
    again = client.post(
        "/api/v1/events", json.dumps(event("down")), content_type="application/json", **bearer(issued.plaintext)
    )
    assert again.status_code == 201 and CostEntry.objects.count() == 2


# --- budgets and spend -------------------------------------------------------------------------


def test_check_reserve_settle_and_release_over_http(api, gpt4o_prices):
    BudgetFactory(name="Image API", scope="service:image-api", amount=Decimal("10"), hard_limit=True)
    check = api.post("/budgets/check", {"scope": "service:image-api", "amount": "4"}).json()
    assert check["allowed"] is True
    [status] = [b for b in check["budgets"] if b["scope"] == "service:image-api"]
    assert (status["limit"], status["spent"], status["available"]) == ("10", "0", "10")

    held = api.post("/budgets/reserve", {"scopes": ["service:image-api"], "amount": "6"})
    assert held.status_code == 201
    [reservation] = held.json()["reservations"]
    denied = api.post("/budgets/reserve", {"scopes": ["service:image-api"], "amount": "5"})
    assert denied.status_code == 409
    assert denied.json()["code"] == "budget_exceeded" and denied.json()["available"] == "4"
    assert denied.json()["budget"]["name"] == "Image API"

    settled = api.post(f"/reservations/{reservation['id']}/settle", {"actual": "5.5"})
    assert settled.status_code == 200 and settled.json()["status"] == "settled"
    assert api.post(f"/reservations/{reservation['id']}/settle", {"actual": "1"}).status_code == 409
    second = api.post("/budgets/reserve", {"scopes": ["service:image-api"], "amount": "2"}).json()["reservations"][0]
    released = api.post(f"/reservations/{second['id']}/release", {})
    assert released.status_code == 200 and released.json()["status"] == "released"
    assert Reservation.objects.get(pk=second["id"]).released_at is not None
    assert api.post("/reservations/999999/release", {}).status_code == 404
    assert api.post("/budgets/check", {"scope": "bogus:thing"}).status_code == 422
    assert api.post("/budgets/check", {"scope": "global", "amount": "-1"}).status_code == 422
    listed = api.get("/budgets").json()["budgets"]
    assert [b["name"] for b in listed] == ["Image API"]


def test_spend_is_answered_from_rollups_grouped_as_asked(api, gpt4o_prices, settings):
    settings.TIME_ZONE = "UTC"
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    events = [
        event("s1", occurred_at=base.isoformat(), amount="1.00", model="gpt-4o"),
        event("s2", occurred_at=(base + timedelta(hours=1)).isoformat(), amount="2.00", model="gpt-4o-mini"),
        event("s3", occurred_at=(base + timedelta(days=1)).isoformat(), amount="4.00", model="gpt-4o"),
    ]
    assert api.post("/events", {"events": events}).json()["accepted"] == 3
    window = {"from": (base - timedelta(hours=5)).isoformat(), "to": (base + timedelta(days=2)).isoformat()}
    total = api.get("/spend", window).json()
    assert total["total"] == "7"
    models = api.get("/spend", {**window, "group_by": "model"}).json()["groups"]
    assert models == [
        {"key": "gpt-4o", "amount": "5", "events": 2},
        {"key": "gpt-4o-mini", "amount": "2", "events": 1},
    ]
    days = api.get("/spend", {**window, "group_by": "day"}).json()["groups"]
    assert [g["amount"] for g in days] == ["3", "4"]
    hours = api.get("/spend", {**window, "group_by": "hour"}).json()["groups"]
    assert [g["amount"] for g in hours] == ["1", "2", "4"]
    narrow = api.get("/spend", {**window, "scope": "service:image-api", "group_by": "model"})
    assert narrow.status_code == 422 and "group_by" in narrow.json()["errors"]
    backwards = api.get("/spend", {"from": window["to"], "to": window["from"]})
    assert backwards.status_code == 422 and "to" in backwards.json()["errors"]
    assert api.get("/spend", {"from": "2026-11-01T00:00:00", "to": "2026-11-02T00:00:00+00:00"}).status_code == 422


def test_the_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["openapi"].startswith("3.") and "/api/v1/events" in schema["paths"]
    assert client.get("/api/v1/docs").status_code == 200


def test_a_pipeline_opens_and_closes_its_batch_over_http(api, gpt4o_prices):
    started = api.post("/batches", {"name": "nightly-leads"})
    assert started.status_code == 201
    job = started.json()["job"]
    assert api.post("/batches", {"name": "nightly-leads"}).status_code == 409  # already running: a conflict
    assert api.post("/events", event("b-1", job=job, amount="3.00", currency="USD")).status_code == 201
    finished = api.post("/batches/nightly-leads/finish", {"leads": 4})
    assert finished.status_code == 200
    body = finished.json()
    assert (body["cost"], body["leads"], body["cost_per_lead"]) == ("3", 4, "0.75")
    assert api.post("/batches/nightly-leads/finish", {"leads": 1}).status_code == 404
    assert api.post("/batches", {"name": "x"}).status_code == 201
    bad = api.post("/batches/x/finish", {"leads": -1})
    assert bad.status_code == 422 and "leads" in bad.json()["errors"]
    assert [b["name"] for b in api.get("/batches").json()["batches"]] == ["x", "nightly-leads"]


def test_huge_decimal_quantities_are_refused_not_a_server_error(api, gpt4o_prices):
    for field in ("seconds", "gpu_hours"):
        response = api.post("/events", {**EVENT, field: 5.877975911758049e307})
        assert response.status_code == 422 and field in response.json()["errors"]
    assert CostEntry.objects.count() == 0
