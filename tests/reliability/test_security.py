"""Security: team-scoped admin, API key scopes, no secrets in logs, `check --deploy`, the SSRF guard.

Real parts throughout: the admin and the API through Django's test client (and a live server for
the client library), webhook and SMTP servers on 127.0.0.1. DNS is the one thing mocked
(socket.getaddrinfo), to make names such as internal.example resolve where a test needs them to.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alerts import netguard
from alerts.delivery import channel_test_send, notification_deliver, notifications_flush
from alerts.models import (
    Alert,
    Channel,
    DeliveryAttempt,
    Notification,
    NotificationStatus,
)
from alerts.services import alert_fire
from api.keys import KEY_PREFIX, api_key_issue, api_key_revoke
from budgets.models import Budget, Reservation
from budgets.services import budget_reserve
from tests.admin_clients import staff_client
from tests.alerts.servers import smtp_server, webhook_receiver
from tests.factories import (
    AlertFactory,
    AlertRuleFactory,
    BatchFactory,
    BudgetFactory,
    ChannelFactory,
    NotificationFactory,
    TeamFactory,
)
from tracking.models import CostEntry
from tracking.services import cost_entry_record

BASE_DIR = Path(__file__).resolve().parents[2]
# The client is a package of its own, not installed into the server's venv (as in tests/client).
if str(BASE_DIR / "costcontrol_client") not in sys.path:
    sys.path.insert(0, str(BASE_DIR / "costcontrol_client"))
from costcontrol_client import Client as CostClient  # noqa: E402
from costcontrol_client.errors import AuthError  # noqa: E402

EVENT = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100}


# --- helpers --------------------------------------------------------------------------------------


def shown(response: Any) -> set[int]:
    """Primary keys of the rows a change list shows."""
    assert response.status_code == 200, response
    return {obj.pk for obj in response.context["cl"].result_list}


def assert_doesnt_exist(response: Any) -> None:
    """The admin's answer to an object it cannot find: a redirect to the index with a message."""
    assert response.status_code == 302 and response.url == reverse("admin:index"), response
    *_, message = list(get_messages(response.wsgi_request))
    assert "doesn\N{RIGHT SINGLE QUOTATION MARK}t exist" in str(message)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str] | Callable[[], list[str]]]:
    """Names resolved by the test: name -> addresses (or a callable giving them per lookup).
    Other names go to the real resolver."""
    table: dict[str, list[str] | Callable[[], list[str]]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in table:
            return real(host, port, *args, **kwargs)
        entry = table[name]
        addresses = entry() if callable(entry) else entry
        result = []
        for address in addresses:
            ip = ipaddress.ip_address(address)
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            sockaddr = (address, int(port or 0)) if ip.version == 4 else (address, int(port or 0), 0, 0)
            result.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return result

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


# --- alerts carry their team ------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_alert_takes_its_rules_team_else_its_budgets():
    ml, web = TeamFactory(name="ml"), TeamFactory(name="web")
    rule = AlertRuleFactory(name="ml spend", metric="spend", threshold=Decimal(1), team=ml)
    budget = BudgetFactory(name="web budget", team=web)
    common = {"source": "rule", "level": "warning", "scope": "global", "title": "t", "message": "m"}
    assert alert_fire(key="r", rule=rule, **common).alert.team == ml
    assert alert_fire(key="b", budget=budget, **{**common, "source": "budget"}).alert.team == web
    assert alert_fire(key="none", **common).alert.team is None


# --- admin: a staff member sees their teams' objects only -------------------------------------------

VIEW_ALL = [
    "view_budget",
    "change_budget",
    "add_budget",
    "delete_budget",
    "view_reservation",
    "view_alertrule",
    "change_alertrule",
    "add_alertrule",
    "view_alert",
    "change_alert",
    "view_notification",
    "view_costentry",
    "view_batch",
]


@pytest.fixture
def two_teams(db, gpt4o_prices):
    """Team ml and team web, each with a budget, a rule, an alert with a notification, cost entries
    and a batch; plus organisation-wide (team-less) ones of each."""
    ml, web = TeamFactory(name="ml"), TeamFactory(name="web")
    channel = ChannelFactory(name="hook", kind="webhook", target="http://127.0.0.1:9/hook")
    objects: dict[str, dict[str, Any]] = {}
    for team in (ml, web, None):
        name = team.name if team else "org"
        budget = BudgetFactory(name=f"{name} budget", scope=f"service:{name}", team=team, hard_limit=True)
        rule = AlertRuleFactory(name=f"{name} rule", metric="spend", threshold=Decimal(1), team=team)
        alert = AlertFactory(
            key=f"{name}-alert",
            source="rule",
            rule=rule,
            team=team,
            scope="global",
            level="warning",
            title=f"{name} alert",
            message="m",
            first_fired_at=timezone.now(),
            last_fired_at=timezone.now(),
        )
        notification = NotificationFactory(
            channel=channel, alert=alert, kind="firing", dedup_key=f"{name}-n", subject=f"{name} n", text="t"
        )
        entry = cost_entry_record(**EVENT, idempotency_key=f"{name}-e", team=team, job=f"{name}-job").entry
        batch = BatchFactory(name=f"{name} pipeline", job=f"{name}-job")
        [reservation] = budget_reserve(scopes=[budget.scope], amount=Decimal(1))
        objects[name] = {
            "budget": budget,
            "alertrule": rule,
            "alert": alert,
            "notification": notification,
            "costentry": entry,
            "batch": batch,
            "reservation": reservation,
        }
    return ml, web, objects


ADMIN_MODELS = {
    "budget": "budgets",
    "reservation": "budgets",
    "alertrule": "alerts",
    "alert": "alerts",
    "notification": "alerts",
    "costentry": "tracking",
    "batch": "tracking",
}


def test_a_staff_member_sees_only_their_teams_objects_and_no_organisation_wide_ones(two_teams):
    ml, _, objects = two_teams
    _, alice = staff_client("alice", [ml], VIEW_ALL)
    for model, app in ADMIN_MODELS.items():
        listed = shown(alice.get(reverse(f"admin:{app}_{model}_changelist")))
        assert listed == {objects["ml"][model].pk}, model
        own = alice.get(reverse(f"admin:{app}_{model}_change", args=[objects["ml"][model].pk]))
        assert own.status_code == 200, model
        for other in ("web", "org"):
            pk = objects[other][model].pk
            assert_doesnt_exist(alice.get(reverse(f"admin:{app}_{model}_change", args=[pk])))
            assert_doesnt_exist(alice.get(reverse(f"admin:{app}_{model}_history", args=[pk])))


def test_a_member_of_two_teams_sees_both_and_a_superuser_sees_everything(two_teams):
    ml, web, objects = two_teams
    _, both = staff_client("bob", [ml, web], VIEW_ALL)
    root = Client()
    root.force_login(User.objects.create_superuser("root", password="pw-not-used"))
    for model, app in ADMIN_MODELS.items():
        url = reverse(f"admin:{app}_{model}_changelist")
        assert shown(both.get(url)) == {objects[t][model].pk for t in ("ml", "web")}, model
        assert shown(root.get(url)) == {objects[t][model].pk for t in ("ml", "web", "org")}, model


def test_another_teams_budget_cannot_be_changed_or_deleted_by_url_or_action(two_teams):
    ml, web, objects = two_teams
    _, alice = staff_client("alice", [ml], VIEW_ALL)
    theirs = objects["web"]["budget"]
    change = reverse("admin:budgets_budget_change", args=[theirs.pk])
    assert_doesnt_exist(alice.post(change, {"name": "taken over", "team": ml.pk}))
    assert_doesnt_exist(alice.get(reverse("admin:budgets_budget_delete", args=[theirs.pk])))
    assert_doesnt_exist(alice.post(reverse("admin:budgets_budget_delete", args=[theirs.pk]), {"post": "yes"}))
    alice.post(
        reverse("admin:budgets_budget_changelist"),
        {"action": "delete_selected", "_selected_action": [theirs.pk], "post": "yes"},
    )
    theirs.refresh_from_db()
    assert theirs.name == "web budget" and theirs.team == web
    # Acknowledging another team's alert through the action changes nothing either.
    alice.post(
        reverse("admin:alerts_alert_changelist"),
        {"action": "acknowledge", "_selected_action": [objects["web"]["alert"].pk]},
    )
    assert Alert.objects.get(pk=objects["web"]["alert"].pk).acknowledged_at is None


def test_model_permissions_still_apply_on_top_of_teams(two_teams):
    ml, _, objects = two_teams
    _, carol = staff_client("carol", [ml], ["view_alert"])
    assert carol.get(reverse("admin:budgets_budget_changelist")).status_code == 403
    assert carol.get(reverse("admin:budgets_budget_change", args=[objects["ml"]["budget"].pk])).status_code == 403
    assert shown(carol.get(reverse("admin:alerts_alert_changelist"))) == {objects["ml"]["alert"].pk}


BUDGET_FORM = {
    "scope": "team:ml/service:new",
    "confirm_scope": "on",  # a service with no spend yet
    "amount": "50",
    "currency": "USD",
    "period": "monthly",
    "thresholds": "50, 80, 100",
    "metadata": "{}",
    "is_active": "on",
    "periods-TOTAL_FORMS": "0",
    "periods-INITIAL_FORMS": "0",
}


def test_the_team_choice_is_limited_to_the_users_teams_and_required_for_them(two_teams):
    ml, web, _ = two_teams
    _, alice = staff_client("alice", [ml], VIEW_ALL)
    add = reverse("admin:budgets_budget_add")
    field = alice.get(add).context["adminform"].form.fields["team"]
    assert list(field.queryset) == [ml] and field.required

    missing = alice.post(add, {**BUDGET_FORM, "name": "no team"})
    assert missing.status_code == 200 and "team" in missing.context["adminform"].form.errors
    other = alice.post(add, {**BUDGET_FORM, "name": "their team", "team": web.pk})
    assert other.status_code == 200 and "team" in other.context["adminform"].form.errors
    assert not Budget.objects.filter(name__in=["no team", "their team"]).exists()

    ok = alice.post(add, {**BUDGET_FORM, "name": "ours", "team": ml.pk})
    assert ok.status_code == 302, ok.context["adminform"].form.errors
    assert Budget.objects.get(name="ours").team == ml

    rule_form = alice.get(reverse("admin:alerts_alertrule_add")).context["adminform"].form
    assert list(rule_form.fields["team"].queryset) == [ml] and rule_form.fields["team"].required


def test_a_superuser_may_leave_the_team_empty_for_an_organisation_wide_budget(two_teams):
    root = Client()
    root.force_login(User.objects.create_superuser("root", password="pw-not-used"))
    add = reverse("admin:budgets_budget_add")
    assert not root.get(add).context["adminform"].form.fields["team"].required
    response = root.post(add, {**BUDGET_FORM, "name": "org-wide"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Budget.objects.get(name="org-wide").team is None


def test_the_team_filter_offers_only_the_users_teams(two_teams):
    ml, web, _ = two_teams
    _, alice = staff_client("alice", [ml], VIEW_ALL)
    response = alice.get(reverse("admin:budgets_budget_changelist"))
    [team_filter] = [f for f in response.context["cl"].filter_specs if f.title == "team"]
    assert [title for _, title in team_filter.lookup_choices] == ["ml"]
    # Asking for another team's rows by the filter's parameter shows nothing.
    assert shown(alice.get(reverse("admin:budgets_budget_changelist"), {"team": web.pk})) == set()


# --- API keys: scopes, revocation, expiry (what tests/api does not already cover) ----------------------


def _bearer(plaintext: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


def _post(client: Client, path: str, body: Any, key: str) -> Any:
    return client.post(f"/api/v1{path}", json.dumps(body), content_type="application/json", **_bearer(key))


def _forbidden(response: Any, scope: str) -> None:
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["code"] == "forbidden" and repr(scope) in body["message"] and body["errors"] == {"scope": ["forbidden"]}


@pytest.mark.django_db
def test_a_restricted_key_cannot_reserve_outside_its_scopes_not_even_alongside_an_allowed_one(client, gpt4o_prices):
    BudgetFactory(name="image", scope="service:image-api", amount=Decimal(10), hard_limit=True)
    BudgetFactory(name="everything", scope="global", amount=Decimal(10), hard_limit=True)
    key = api_key_issue(name="narrow", service="image-api", scopes=["service:image-api"]).plaintext
    _forbidden(
        _post(client, "/budgets/reserve", {"scopes": ["service:image-api", "global"], "amount": "1"}, key), "global"
    )
    _forbidden(_post(client, "/budgets/check", {"scope": "service:billing"}, key), "service:billing")
    assert Reservation.objects.count() == 0
    ok = _post(client, "/budgets/reserve", {"scopes": ["service:image-api"], "amount": "1"}, key)
    assert ok.status_code == 201 and Reservation.objects.filter(budget__scope="service:image-api").count() == 1


@pytest.mark.django_db
def test_a_restricted_key_cannot_settle_release_or_read_another_scopes_budget(client, gpt4o_prices):
    BudgetFactory(name="image", scope="service:image-api", amount=Decimal(10), hard_limit=True)
    BudgetFactory(name="billing", scope="service:billing", amount=Decimal(10), hard_limit=True)
    wide = api_key_issue(name="wide", service="billing").plaintext
    narrow = api_key_issue(name="narrow", service="image-api", scopes=["service:image-api"]).plaintext
    [held] = _post(client, "/budgets/reserve", {"scopes": ["service:billing"], "amount": "3"}, wide).json()[
        "reservations"
    ]
    _forbidden(_post(client, f"/reservations/{held['id']}/settle", {"actual": "0"}, narrow), "service:billing")
    _forbidden(_post(client, f"/reservations/{held['id']}/release", {}, narrow), "service:billing")
    reservation = Reservation.objects.get(pk=held["id"])
    assert reservation.actual is None and reservation.status_at() == "active"

    listed = client.get("/api/v1/budgets", **_bearer(narrow)).json()["budgets"]
    assert [b["scope"] for b in listed] == ["service:image-api"]
    window = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}
    assert client.get("/api/v1/spend", {**window, "scope": "service:image-api"}, **_bearer(narrow)).status_code == 200
    _forbidden(
        client.get("/api/v1/spend", {**window, "scope": "service:billing"}, **_bearer(narrow)), "service:billing"
    )


@pytest.mark.django_db
def test_revoked_and_expired_keys_get_401_on_every_operation(client, gpt4o_prices):
    BudgetFactory(name="image", scope="service:image-api", amount=Decimal(10), hard_limit=True)
    issued = api_key_issue(name="soon gone", service="image-api", expires_at=timezone.now() + timedelta(hours=1))
    key = issued.plaintext
    [held] = _post(client, "/budgets/reserve", {"scopes": ["service:image-api"], "amount": "1"}, key).json()[
        "reservations"
    ]
    window = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "scope": "service:image-api"}

    def every_operation(plaintext: str) -> list[int]:
        return [
            _post(client, "/events", {**EVENT, "idempotency_key": "x"}, plaintext).status_code,
            _post(client, "/budgets/check", {"scope": "service:image-api"}, plaintext).status_code,
            _post(client, "/budgets/reserve", {"scopes": ["service:image-api"], "amount": "1"}, plaintext).status_code,
            _post(client, f"/reservations/{held['id']}/settle", {"actual": "1"}, plaintext).status_code,
            _post(client, f"/reservations/{held['id']}/release", {}, plaintext).status_code,
            client.get("/api/v1/budgets", **_bearer(plaintext)).status_code,
            client.get("/api/v1/spend", window, **_bearer(plaintext)).status_code,
            client.get("/api/v1/batches", **_bearer(plaintext)).status_code,
        ]

    import time_machine

    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        assert set(every_operation(key)) == {401}
    api_key_revoke(key=issued.key)
    assert set(every_operation(key)) == {401}
    assert CostEntry.objects.count() == 0 and Reservation.objects.get(pk=held["id"]).status_at() == "active"
    assert Reservation.objects.count() == 1


# --- no secrets in logs -------------------------------------------------------------------------------


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """Every log record at DEBUG (the loggers' configured levels still apply, as in production),
    plus whatever reached stdout/stderr (the console handler, libraries printing)."""
    caplog.set_level(logging.DEBUG)

    def text() -> str:
        out, err = capfd.readouterr()
        return "\n".join([caplog.text, *(r.getMessage() for r in caplog.records), out, err])

    return text


def _key_secret(plaintext: str) -> str:
    """The secret part of cc_<prefix>_<secret>, split as api_key_verify splits it: the secret is
    token_urlsafe and may itself contain "_" (rsplit picked a one-letter tail that any log matched)."""
    assert plaintext.startswith(KEY_PREFIX)
    secret = plaintext[len(KEY_PREFIX) :].partition("_")[2]
    assert len(secret) >= 40
    return secret


def assert_no_secret(logged: str, secrets_: dict[str, str]) -> None:
    leaked = {name: value for name, value in secrets_.items() if value and value in logged}
    assert not leaked, f"secrets in the logs: {sorted(leaked)}\n{logged}"


@pytest.mark.django_db(transaction=True)
def test_api_requests_and_the_client_library_log_no_key(
    live_server, everything_logged, gpt4o_prices, settings, tmp_path
):
    settings.SECRET_KEY = "django-secret-" + secrets.token_urlsafe(32)
    settings.METRICS_BEARER_TOKEN = "metrics-token-" + secrets.token_urlsafe(16)
    settings.DEBUG = True  # queries are logged to django.db.backends then
    connection.force_debug_cursor = True
    try:
        issued = api_key_issue(name="app", service="image-api", scopes=["service:image-api"])
        revoked = api_key_issue(name="old", service="image-api")
        api_key_revoke(key=revoked.key)
        http = Client()
        assert _post(http, "/events", {**EVENT, "idempotency_key": "a"}, issued.plaintext).status_code == 201
        assert _post(http, "/budgets/check", {"scope": "global"}, issued.plaintext).status_code == 403
        assert _post(http, "/events", {**EVENT, "idempotency_key": "b"}, revoked.plaintext).status_code == 401
        assert _post(http, "/events", {**EVENT, "idempotency_key": "c"}, issued.plaintext + "x").status_code == 401
        assert http.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code in (401, 403)
        assert http.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_BEARER_TOKEN}").status_code == 200

        # The client library against the live server: a good key, a revoked one, and a dead server.
        good = CostClient(live_server.url, issued.plaintext, service="image-api", spool_path=tmp_path / "a.jsonl")
        good.record(**EVENT)
        assert good.flush(timeout=10)
        with pytest.raises(AuthError):
            good.check("global", "1")
        good.close(timeout=5)
        bad = CostClient(
            live_server.url, revoked.plaintext, service="image-api", spool_path=tmp_path / "b.jsonl", max_retries=0
        )
        bad.record(**EVENT)
        bad.close(timeout=5)
        dead = CostClient(
            "http://127.0.0.1:9", issued.plaintext, service="image-api", spool_path=tmp_path / "c.jsonl", max_retries=0
        )
        dead.record(**EVENT)
        dead.close(timeout=5)
    finally:
        connection.force_debug_cursor = False
    logged = everything_logged()
    assert "costcontrol" in logged  # the capture works: the client logged its spooling
    assert_no_secret(
        logged,
        {
            "API key": issued.plaintext,
            "API key secret": _key_secret(issued.plaintext),
            "revoked API key": _key_secret(revoked.plaintext),
            "SECRET_KEY": settings.SECRET_KEY,
            "metrics token": settings.METRICS_BEARER_TOKEN,
        },
    )


WEBHOOK_TOKEN = "whTok3nAbcdefGhij0123456789"
QUERY_TOKEN = "qsTok3nZyxwvuTsrq9876543210"
SLACK_TOKENS = ("T1234ABCD", "B5678EFGH", "sl4ckS3cretTokenXYZ0123456")
SMTP_PASSWORD = "smtp-pa55word-" + "x" * 12


@pytest.mark.django_db
def test_alert_delivery_logs_no_url_token_or_password_even_when_it_fails(settings, everything_logged, fake_dns):
    settings.SECRET_KEY = "django-secret-" + secrets.token_urlsafe(32)
    settings.DEBUG = True  # queries (the channels' targets among their parameters) go to django.db.backends
    connection.force_debug_cursor = True
    # Slack is outside: its host resolves to a local port where nothing listens (a failed delivery).
    fake_dns["hooks.slack.com"] = ["127.0.0.1"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "alerts", SMTP_PASSWORD
    with webhook_receiver(script=[500]) as receiver, smtp_server() as (controller, _):
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
        base = receiver.url.rsplit("/", 1)[0]
        channels = [
            Channel(name="hook", kind="webhook", target=f"{base}/hook/{WEBHOOK_TOKEN}?token={QUERY_TOKEN}"),
            Channel(
                name="dead hook", kind="webhook", target=f"http://127.0.0.1:9/hook/{WEBHOOK_TOKEN}?t={QUERY_TOKEN}"
            ),
            Channel(name="slack", kind="slack", target="https://hooks.slack.com/services/" + "/".join(SLACK_TOKENS)),
            Channel(name="json", kind="apprise", target=f"{base.replace('http', 'json')}/{WEBHOOK_TOKEN}"),
            Channel(name="mail", kind="email", target="ops@example.com"),
        ]
        for channel in channels:
            channel.full_clean()
            channel.save()
            channel_test_send(channel=channel)
        try:
            first = notifications_flush()
            later = notifications_flush(now=timezone.now() + timedelta(minutes=5))
        finally:
            connection.force_debug_cursor = False
    assert first.get("retry", 0) + first.get("failed", 0) >= 3, first  # the 500, the dead port, Slack, SMTP AUTH
    assert later.get("sent", 0) >= 1, later  # the webhook's retry went through
    errors = "\n".join(DeliveryAttempt.objects.values_list("error", flat=True))
    errors += "\n".join(Channel.objects.values_list("disabled_reason", flat=True))
    assert errors.strip()
    logged = everything_logged()
    assert "webhook" in logged or "slack" in logged.lower()  # the capture saw the deliveries
    secrets_ = {
        "webhook path token": WEBHOOK_TOKEN,
        "webhook query token": QUERY_TOKEN,
        **{f"slack token {i}": t for i, t in enumerate(SLACK_TOKENS)},
        "SMTP password": SMTP_PASSWORD,
        "SECRET_KEY": settings.SECRET_KEY,
    }
    assert_no_secret(logged, secrets_)
    # The attempts' errors are shown in the admin and logged: masked there too.
    assert_no_secret(errors, secrets_)


def test_scrubbing_masks_tokens_and_keeps_the_host():
    from alerts.transports import scrub_target

    target = f"https://user:pa55wordX@hooks.example.com/services/{WEBHOOK_TOKEN}?sig={QUERY_TOKEN}"
    text = f"failed: POST https://hooks.example.com/services/{WEBHOOK_TOKEN}?sig={QUERY_TOKEN} pa55wordX"
    scrubbed = scrub_target(text, target, keep={"hooks.example.com"})
    assert WEBHOOK_TOKEN not in scrubbed and QUERY_TOKEN not in scrubbed and "pa55wordX" not in scrubbed
    assert "hooks.example.com/services/" in scrubbed


# --- check --deploy with the production settings --------------------------------------------------------


def _deploy_check(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "METRICS_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "costcontrol.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "costcontrol.example.com",
            "SITE_URL": "https://costcontrol.example.com",
            "METRICS_BEARER_TOKEN": secrets.token_urlsafe(24),
            **overrides,
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_with_production_settings_reports_nothing():
    result = _deploy_check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_when_production_is_weakened():
    """The check above can fail: turning the SSL redirect off, or no secret key, is reported."""
    weak = _deploy_check(DJANGO_SECURE_SSL_REDIRECT="false", DJANGO_SECURE_HSTS_SECONDS="0")
    assert weak.returncode != 0 and "security.W008" in weak.stderr and "security.W004" in weak.stderr
    no_key = _deploy_check(DJANGO_SECRET_KEY="")
    assert no_key.returncode != 0 and "DJANGO_SECRET_KEY" in no_key.stderr


# --- the SSRF guard -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not one to bind
        ("100.64.0.1", "non-public"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("fd00::5", "private"),
        ("::ffff:10.0.0.5", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a00:5", "private"),
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("::ffff:93.184.216.34", None),
    ],
)
def test_blocked_address_kinds(settings, address, reason):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    assert netguard.address_problem(ipaddress.ip_address(address)) == reason


def test_an_allowed_network_lets_its_addresses_through(settings):
    settings.CHANNEL_ALLOWED_NETWORKS = ["10.20.0.0/16", "fd00::/8"]
    assert netguard.address_problem(ipaddress.ip_address("10.20.1.2")) is None
    assert netguard.address_problem(ipaddress.ip_address("::ffff:10.20.1.2")) is None
    assert netguard.address_problem(ipaddress.ip_address("fd00::5")) is None
    assert netguard.address_problem(ipaddress.ip_address("10.21.1.2")) == "private"


@pytest.mark.parametrize(
    ("kind", "target", "address"),
    [
        ("webhook", "https://internal.example/hook", "10.0.0.5"),
        ("webhook", "http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("webhook", "http://[::ffff:127.0.0.1]:8080/", "::ffff:127.0.0.1"),
        ("webhook", "http://[::1]/hook", "::1"),
        ("webhook", "http://v6.internal.example/hook", "fd00::5"),
        ("slack", "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX", "10.0.0.5"),
        ("apprise", "json://internal.example:8080/path", "10.0.0.5"),
        ("apprise", "mmost://10.1.2.3/token", "10.1.2.3"),
        ("msteams", "workflows://internal.example/wf/sig", "10.0.0.5"),
    ],
)
@pytest.mark.django_db
def test_a_channel_whose_target_resolves_inside_is_refused_at_save_naming_the_address(
    settings, fake_dns, kind, target, address
):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    fake_dns["internal.example"] = ["10.0.0.5"]
    fake_dns["v6.internal.example"] = ["93.184.216.34", "fd00::5"]  # one bad address is enough
    fake_dns["hooks.slack.com"] = ["10.0.0.5"]
    with pytest.raises(ValidationError) as excinfo:
        Channel(name="c", kind=kind, target=target).full_clean()
    [message] = excinfo.value.message_dict["target"]
    assert address in message and "refused" in message
    settings.CHANNEL_ALLOWED_NETWORKS = ["10.0.0.0/8", "169.254.0.0/16", "127.0.0.0/8", "::1/128", "fd00::/8"]
    Channel(name="c", kind=kind, target=target).full_clean()


@pytest.mark.django_db
def test_public_and_unresolvable_targets_are_accepted_at_save(settings, fake_dns):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    fake_dns["hooks.example.com"] = ["93.184.216.34"]
    fake_dns["gone.example"] = []  # resolves to nothing now: the delivery checks again
    Channel(name="a", kind="webhook", target="https://hooks.example.com/x").full_clean()
    Channel(name="b", kind="webhook", target="https://gone.example/x").full_clean()
    # Slack's and PagerDuty's own URLs name no host of ours: nothing to resolve.
    Channel(name="c", kind="pagerduty", target="pagerduty://integrationkey@apikey").full_clean()


@pytest.fixture
def blocked_delivery(settings, fake_dns) -> Iterator[Callable[[str, str], Notification]]:
    """A channel saved while its name resolved to a public address, sent to after the name moved
    to 127.0.0.1 (where a real receiver listens: a guard that failed would deliver to it)."""
    settings.CHANNEL_ALLOWED_NETWORKS = []
    with webhook_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1].split("/")[0]

        def deliver(kind: str, scheme: str) -> Notification:
            fake_dns["hooks.partner.example"] = ["93.184.216.34"]
            channel = Channel(name=kind, kind=kind, target=f"{scheme}://hooks.partner.example:{port}/hook")
            channel.full_clean()
            channel.save()
            fake_dns["hooks.partner.example"] = ["127.0.0.1"]  # DNS changed since the save
            notification = channel_test_send(channel=channel)
            notification_deliver(notification_id=notification.pk)
            notification.refresh_from_db()
            assert receiver.requests == []
            return notification

        yield deliver


@pytest.mark.django_db
@pytest.mark.parametrize(("kind", "scheme"), [("webhook", "http"), ("apprise", "json")])
def test_a_target_that_moved_inside_is_refused_at_delivery_permanently(blocked_delivery, kind, scheme):
    notification = blocked_delivery(kind, scheme)
    assert notification.status == NotificationStatus.FAILED and notification.attempts == 1
    [attempt] = notification.delivery_attempts.all()
    assert attempt.permanent and not attempt.ok
    assert "127.0.0.1, a loopback address: refused" in attempt.error  # where the connection was made
    channel = Channel.objects.get(pk=notification.channel_id)
    assert not channel.is_enabled and "127.0.0.1" in channel.disabled_reason
    # Not retried: nothing is due any more, however long we wait.
    assert notifications_flush(now=timezone.now() + timedelta(days=1)) == {}


@pytest.mark.django_db
def test_dns_that_answers_differently_at_connect_time_is_caught_where_the_connection_is_made(settings, fake_dns):
    """The save's check sees a public address; the lookup urllib3 makes to connect gets the loopback
    one (DNS rebinding). The guard on the socket refuses the address it is asked to connect to."""
    settings.CHANNEL_ALLOWED_NETWORKS = []
    answers = iter([["93.184.216.34"]])
    fake_dns["rebind.example"] = lambda: next(answers, ["127.0.0.1"])
    with webhook_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1].split("/")[0]
        channel = Channel(name="rebind", kind="webhook", target=f"http://rebind.example:{port}/hook")
        channel.full_clean()  # the public answer
        channel.save()
        notification = channel_test_send(channel=channel)
        result = notification_deliver(notification_id=notification.pk)  # 127.0.0.1 from here on
    assert receiver.requests == []
    assert result.status == "failed" and "127.0.0.1, a loopback address" in result.error


@pytest.mark.django_db
def test_a_redirect_to_an_inside_address_is_refused(settings):
    """A receiver that is allowed answers with a redirect to one that is not."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    settings.CHANNEL_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    with webhook_receiver() as inside:

        class Redirect(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.send_response(307)
                self.send_header("Location", inside.url)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        try:
            server = ThreadingHTTPServer(("127.0.0.2", 0), Redirect)
        except OSError:
            pytest.skip("127.0.0.2 cannot be bound here")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            channel = ChannelFactory(
                name="redirect", kind="webhook", target=f"http://127.0.0.2:{server.server_address[1]}/hook"
            )
            result = notification_deliver(notification_id=channel_test_send(channel=channel).pk)
        finally:
            server.shutdown()
            server.server_close()
    assert inside.requests == []
    assert result.status == "failed" and "127.0.0.1, a loopback address" in result.error


@pytest.mark.django_db
def test_email_is_not_guarded_its_server_is_operator_configuration(settings):
    settings.CHANNEL_ALLOWED_NETWORKS = []
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    with smtp_server() as (controller, sink):
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
        channel = ChannelFactory(name="mail", kind="email", target="ops@example.com")
        channel.full_clean()
        assert notification_deliver(notification_id=channel_test_send(channel=channel).pk).status == "sent"
    assert len(sink.messages) == 1
