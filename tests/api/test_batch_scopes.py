"""Batch endpoints honour the key: a pipeline belongs to the service that started it (issue 18)."""

from __future__ import annotations

import json

import pytest

from api.keys import api_key_issue
from tracking.batches import batch_start
from tracking.models import Batch

pytestmark = pytest.mark.django_db


def post(client, plaintext: str, path: str, body: object):
    return client.post(
        f"/api/v1{path}", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {plaintext}"
    )


def forbidden(response, name: str) -> None:
    assert response.status_code == 403, response.content
    assert response.json()["code"] == "forbidden" and repr(name) in response.json()["message"]


def test_a_key_limited_to_its_service_cannot_start_or_finish_another_services_batch(client):
    svc_a = api_key_issue(name="a", service="svc-a").plaintext
    svc_b = api_key_issue(name="b", service="svc-b", scopes=["service:svc-b"]).plaintext
    assert post(client, svc_a, "/batches", {"name": "nightly-leads"}).status_code == 201

    forbidden(post(client, svc_b, "/batches/nightly-leads/finish", {"leads": 1}), "nightly-leads")
    assert Batch.objects.get().finished_at is None
    assert post(client, svc_a, "/batches/nightly-leads/finish", {"leads": 3}).status_code == 200
    forbidden(post(client, svc_b, "/batches", {"name": "nightly-leads"}), "nightly-leads")
    assert Batch.objects.count() == 1

    own = post(client, svc_b, "/batches", {"name": "svc-b-pipeline"})
    assert own.status_code == 201 and own.json()["service"] == "svc-b"
    assert own.json()["month_cost_per_lead"] is None  # every service's spend: not for a key without global
    listed = client.get("/api/v1/batches", HTTP_AUTHORIZATION=f"Bearer {svc_b}").json()["batches"]
    assert [b["name"] for b in listed] == ["svc-b-pipeline"]


def test_an_unrestricted_key_of_another_service_cannot_finish_the_batch_either(client):
    svc_a = api_key_issue(name="a", service="svc-a").plaintext
    other = api_key_issue(name="c", service="svc-c").plaintext
    post(client, svc_a, "/batches", {"name": "nightly-leads"})
    forbidden(post(client, other, "/batches/nightly-leads/finish", {"leads": 1}), "nightly-leads")


def test_a_batch_started_from_the_command_line_is_finished_only_by_a_key_that_may_read_global(client):
    batch_start(name="cli-pipeline")
    narrow = api_key_issue(name="b", service="svc-b", scopes=["service:svc-b"]).plaintext
    wide = api_key_issue(name="w", service="svc-w").plaintext
    forbidden(post(client, narrow, "/batches/cli-pipeline/finish", {"leads": 1}), "global")
    assert post(client, wide, "/batches/cli-pipeline/finish", {"leads": 1}).status_code == 200
