"""`manage.py api_key create|list|revoke`: a new user gets a working key without the admin or a shell."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from api.models import ApiKey
from core.models import Team

pytestmark = pytest.mark.django_db


def api_key(*args: str) -> str:
    out = StringIO()
    call_command("api_key", *args, stdout=out)
    return out.getvalue()


def _record(client, plaintext: str, idempotency_key: str = "a"):
    return client.post(
        "/api/v1/events",
        json.dumps({"provider": "openai", "model": "gpt-4o", "input_tokens": 1, "idempotency_key": idempotency_key}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {plaintext}",
    )


def test_create_prints_a_working_key_once_with_its_team_and_scopes(client, gpt4o_prices):
    team = Team.objects.create(name="data")
    out = api_key(
        "create", "--service", "etl", "--team", "data", "--scope", "team:data/service:etl", "--scope", "team:data"
    )
    plaintext = out.splitlines()[1]
    assert "for service etl (team data)" in out and "not shown again" in out
    key = ApiKey.objects.get()
    assert (key.name, key.service, key.team, key.scopes) == ("etl", "etl", team, ["team:data/service:etl", "team:data"])
    assert plaintext.startswith(f"cc_{key.prefix}_") and plaintext.split("_", 2)[2] not in key.hashed
    assert _record(client, plaintext).status_code == 201


def test_a_key_may_manage_budgets_only_when_created_so(client):
    reads = api_key("create", "--service", "reads", "--quiet").strip()
    manages = api_key("create", "--service", "finance", "--manage-budgets", "--quiet").strip()
    body = json.dumps({"name": "Per user", "scope": "subject:*", "amount": "5", "confirm_scope": True})

    def create(plaintext: str) -> int:
        auth = f"Bearer {plaintext}"
        return client.post(
            "/api/v1/budgets", body, content_type="application/json", HTTP_AUTHORIZATION=auth
        ).status_code

    assert (create(reads), create(manages)) == (403, 201)


def test_create_quiet_prints_only_the_key(client, gpt4o_prices):
    plaintext = api_key("create", "--service", "etl", "--quiet").strip()
    assert plaintext.startswith("cc_") and "\n" not in plaintext
    assert _record(client, plaintext).status_code == 201


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scope", "planet:mars"], "scopes: planet:mars: unknown scope kind 'planet'"),
        (["--team", "nobody"], "no team named 'nobody'"),
        (["--expires-in-days", "0"], "--expires-in-days must be 1 or more"),
    ],
)
def test_create_refuses_bad_input_naming_it_and_creates_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        api_key("create", "--service", "etl", *args)
    assert ApiKey.objects.count() == 0


def test_list_shows_each_key_by_prefix_never_its_secret():
    plaintext = api_key("create", "--service", "etl", "--name", "etl nightly", "--quiet").strip()
    api_key("create", "--service", "chat", "--scope", "service:chat", "--quiet")
    out = api_key("list")
    key = ApiKey.objects.get(service="etl")
    [line] = [line for line in out.splitlines() if f"cc_{key.prefix}" in line]
    assert "etl nightly" in line and "active" in line and "any" in line
    assert "service:chat" in out and plaintext.split("_", 2)[2] not in out
    assert "chat" not in api_key("list", "--service", "etl")


def test_revoke_by_prefix_stops_the_key_at_once(client, gpt4o_prices):
    plaintext = api_key("create", "--service", "etl", "--quiet").strip()
    prefix = f"cc_{ApiKey.objects.get().prefix}"
    assert f"API key {prefix} (etl) revoked" in api_key("revoke", prefix)
    assert _record(client, plaintext).status_code == 401
    assert "already revoked" in api_key("revoke", plaintext)  # the whole key names it too
    assert "revoked" in api_key("list")
    with pytest.raises(CommandError, match="no API key cc_000000000000"):
        api_key("revoke", "cc_000000000000")
