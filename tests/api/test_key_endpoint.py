"""GET /api/v1/key: what the calling key is (its service above all, so a client can refuse an event
for another service before sending it), never its secret, and nothing about any other key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.keys import api_key_issue, api_key_revoke
from core.models import Team

pytestmark = pytest.mark.django_db


def get_key(client, plaintext: str, params: dict | None = None):
    return client.get("/api/v1/key", params or {}, HTTP_AUTHORIZATION=f"Bearer {plaintext}")


def test_a_key_reads_its_name_prefix_service_team_scopes_rate_limit_and_expiry_never_its_secret(client):
    team = Team.objects.create(name="ml")
    expires = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    issued = api_key_issue(
        name="search prod",
        service="search",
        team=team,
        scopes=["team:ml/service:search"],
        rate_limit_per_minute=120,
        expires_at=expires,
    )
    api_key_issue(name="other", service="billing")  # another key: not in the answer

    answer = get_key(client, issued.plaintext)

    assert answer.status_code == 200
    assert answer.json() == {
        "name": "search prod",
        "prefix": issued.key.prefix,
        "service": "search",
        "team": "ml",
        "scopes": ["team:ml/service:search"],
        "can_manage_budgets": False,
        "rate_limit_per_minute": 120,
        "expires_at": "2031-01-02T03:04:05+00:00",
    }
    # The secret after "cc_<prefix>_" (it may hold "_" itself: token_urlsafe).
    secret = issued.plaintext.partition(f"{issued.key.prefix}_")[2]
    assert len(secret) > 20 and secret not in answer.content.decode()


def test_an_organisation_key_without_limits_says_team_null_and_the_servers_default_rate_limit(client, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 600
    issued = api_key_issue(name="batch", service="leads")

    body = get_key(client, issued.plaintext).json()

    assert (body["service"], body["team"], body["scopes"], body["expires_at"]) == ("leads", None, [], None)
    assert body["rate_limit_per_minute"] == 600


def test_a_revoked_or_unknown_key_gets_401_and_a_query_parameter_is_refused(client):
    issued = api_key_issue(name="old", service="search")

    assert get_key(client, issued.plaintext, {"id": "3"}).status_code == 422
    api_key_revoke(key=issued.key)
    assert get_key(client, issued.plaintext).status_code == 401
    assert get_key(client, "cc_nope_nope").status_code == 401
