"""The plaintext API key is shown once, in the body of the page that answers the admin's save, and
travels nowhere else: not in the signed (readable) messages cookie, not in the session, not in a cache."""

from __future__ import annotations

import json
import re

import pytest

from api.models import ApiKey
from core.models import Team
from tracking.models import CostEntry

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"cc_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")


def _add(admin_client, **fields: str):
    data = {"name": "lambda", "service": "chat-api", "team": "", "scopes": "", "rate_limit_per_minute": ""}
    return admin_client.post("/admin/api/apikey/add/", {**data, **fields})


def test_the_new_key_is_shown_in_the_page_that_answers_the_save_and_works(admin_client, client, gpt4o_prices):
    response = _add(admin_client, scopes="service:chat-api, global")
    assert response.status_code == 200
    [plaintext] = KEY_RE.findall(response.content.decode())
    assert "not shown again" in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get(name="lambda")
    assert plaintext.startswith(f"cc_{key.prefix}_") and key.scopes == ["service:chat-api", "global"]
    recorded = client.post(
        "/api/v1/events",
        json.dumps({"provider": "openai", "model": "gpt-4o", "input_tokens": 1, "idempotency_key": "a"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {plaintext}",
    )
    assert recorded.status_code == 201 and CostEntry.objects.get().service == "chat-api"


def test_the_key_is_not_carried_in_a_message_a_cookie_the_session_or_a_later_page(admin_client):
    response = _add(admin_client)
    # Messages are stored in a signed, readable cookie: the key must never be one.
    next_page = admin_client.get("/admin/")
    assert not [str(m) for m in next_page.context["messages"] if KEY_RE.search(str(m))]
    [plaintext] = KEY_RE.findall(response.content.decode())
    secret = plaintext.split("_", 2)[2]
    assert all(secret not in cookie.value for cookie in admin_client.cookies.values())
    assert all(secret not in str(value) for value in admin_client.session.values())
    key = ApiKey.objects.get()
    for page in ("/admin/api/apikey/", f"/admin/api/apikey/{key.pk}/change/", "/admin/"):
        assert secret not in admin_client.get(page).content.decode()


def test_a_key_with_a_bad_scope_is_refused_with_the_field_named_and_nothing_is_created(admin_client):
    response = _add(admin_client, scopes="service:chat-api, planet:mars")
    assert response.status_code == 200 and not KEY_RE.search(response.content.decode())
    assert "unknown scope kind &#x27;planet&#x27;" in response.content.decode()
    assert ApiKey.objects.count() == 0


def test_the_admin_sets_the_keys_team(admin_client):
    team = Team.objects.create(name="alpha")
    _add(admin_client, team=str(team.pk))
    assert ApiKey.objects.get().team == team
