"""The per-key rate limit covers every operation of the API, reservations included: walked from the
OpenAPI document, so an operation added later is covered without editing this test."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
import time_machine

from api.api import api
from api.keys import api_key_issue

pytestmark = pytest.mark.django_db

OPERATIONS = sorted(
    (method.upper(), path)
    for path, methods in api.get_openapi_schema()["paths"].items()
    for method in methods
    if method in ("get", "post", "put", "patch", "delete")
)


def test_the_walk_finds_the_reservation_and_batch_operations():
    paths = {path for _, path in OPERATIONS}
    assert {"/api/v1/budgets/reserve", "/api/v1/reservations/{reservation_id}/settle"} <= paths
    assert {"/api/v1/reservations/{reservation_id}/release", "/api/v1/batches/{name}/finish"} <= paths


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_429_past_the_keys_limit(client, method, path):
    issued = api_key_issue(name="slow", service="svc", rate_limit_per_minute=2)
    url = re.sub(r"\{[^}]+\}", "1", path)
    with time_machine.travel(datetime.now(UTC).replace(second=10), tick=False):  # one minute window
        answers = [
            client.generic(
                method,
                url,
                json.dumps({}),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}",
            )
            for _ in range(3)
        ]
    assert [a.status_code == 429 for a in answers] == [False, False, True], [a.status_code for a in answers]
    assert answers[2].json()["code"] == "rate_limited" and int(answers[2]["Retry-After"]) >= 1


def test_keys_are_limited_apart(client):
    slow = api_key_issue(name="slow", service="svc", rate_limit_per_minute=1)
    other = api_key_issue(name="other", service="svc", rate_limit_per_minute=1)
    with time_machine.travel(datetime.now(UTC).replace(second=10), tick=False):
        statuses = [
            client.get("/api/v1/budgets", HTTP_AUTHORIZATION=f"Bearer {key.plaintext}").status_code
            for key in (slow, slow, other)
        ]
    assert statuses == [200, 429, 200]
