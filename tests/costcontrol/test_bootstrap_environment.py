"""`manage.py bootstrap` creates the defaults the environment asks for, once: a daily budget per end user,
the default email and Slack channels. A second run changes nothing and admin edits survive it; a bad
value is an error naming the variable, and nothing is created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from alerts.models import Channel, ChannelKind
from alerts.report_email import daily_report_send
from budgets.models import Budget
from tracking.models import Price

pytestmark = pytest.mark.django_db

BASE_DIR = Path(__file__).resolve().parents[2]
SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX"


@pytest.fixture(autouse=True)
def quiet_environment(settings, monkeypatch):
    """No defaults but the ones a test asks for, whatever the developer's .env says."""
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "x-very-long-password")
    settings.DEFAULT_DAILY_BUDGET = None
    settings.EMAIL_ALERT_RECIPIENTS = []
    settings.ENABLE_EMAIL_ALERTS = True
    settings.SLACK_WEBHOOK_URL = ""
    settings.ENABLE_SLACK_ALERTS = False


def bootstrap() -> str:
    out = StringIO()
    call_command("bootstrap", stdout=out)
    return out.getvalue()


def nothing_was_created() -> bool:
    return not (
        Price.objects.exists()
        or Budget.objects.exists()
        or Channel.objects.exists()
        or get_user_model().objects.exists()
    )


# --- DEFAULT_DAILY_BUDGET ------------------------------------------------------------------------------


def test_default_daily_budget_creates_a_subject_template_once_and_keeps_admin_edits(settings):
    settings.DEFAULT_DAILY_BUDGET = Decimal("5")
    first = bootstrap()

    template = Budget.objects.get(scope="subject:*")
    assert (template.name, template.amount, template.currency, template.period) == (
        "Daily per end user",
        Decimal("5"),
        "USD",
        "daily",
    )
    assert template.is_template and template.template_id is None and template.is_active
    assert "Daily budget per end user: Daily per end user" in first
    # Beside the global monthly budget, which a first run creates as before.
    assert Budget.objects.filter(scope="global", name="Global monthly").exists()

    second = bootstrap()
    assert Budget.objects.count() == 2
    assert "a subject:* template exists, none created" in second

    # Edited in the admin, even switched off: a later run with another value keeps the edit.
    Budget.objects.filter(pk=template.pk).update(amount=Decimal("7.50"), is_active=False)
    settings.DEFAULT_DAILY_BUDGET = Decimal("9")
    bootstrap()
    template.refresh_from_db()
    assert (template.amount, template.is_active) == (Decimal("7.50"), False)
    assert Budget.objects.filter(scope="subject:*").count() == 1


def test_without_default_daily_budget_no_template_is_created():
    output = bootstrap()
    assert not Budget.objects.filter(scope="subject:*").exists()
    assert "Daily budget per end user: none (set DEFAULT_DAILY_BUDGET" in output


@pytest.mark.parametrize("value", ["abc", "-1", Decimal("-0.01"), "1.0000000001"])
def test_a_bad_default_daily_budget_names_the_variable_and_creates_nothing(settings, value):
    settings.DEFAULT_DAILY_BUDGET = value
    with pytest.raises(CommandError, match="DEFAULT_DAILY_BUDGET") as excinfo:
        bootstrap()
    assert "bootstrap changed nothing" in str(excinfo.value)
    assert nothing_was_created()


def test_the_template_shows_in_the_admin_budget_list(settings, client):
    settings.DEFAULT_DAILY_BUDGET = "5"
    bootstrap()
    client.force_login(get_user_model().objects.get(is_superuser=True))
    page = client.get("/admin/budgets/budget/").content.decode()
    assert "Daily per end user" in page
    assert "subject:*" in page


# --- EMAIL_ALERT_RECIPIENTS / ENABLE_EMAIL_ALERTS --------------------------------------------------------


def test_email_alert_recipients_make_the_default_email_channel_once_and_admin_edits_survive(settings):
    settings.EMAIL_ALERT_RECIPIENTS = ["ops@example.com", "finance@example.com"]
    first = bootstrap()

    channel = Channel.objects.get()
    assert (channel.name, channel.kind, channel.target) == (
        "Default email",
        ChannelKind.EMAIL,
        "ops@example.com, finance@example.com",
    )
    assert channel.is_default and channel.receives_reports
    assert "Default channel: Default email -> ops@example.com, finance@example.com." in first

    bootstrap()
    assert Channel.objects.count() == 1

    Channel.objects.filter(pk=channel.pk).update(target="cfo@example.com", min_level="warning")
    bootstrap()
    channel.refresh_from_db()
    assert (Channel.objects.count(), channel.target, channel.min_level) == (1, "cfo@example.com", "warning")


def test_a_renamed_default_channel_is_not_made_again(settings):
    """Renamed in the admin, the default email channel is still the one: alerts are not sent twice."""
    settings.EMAIL_ALERT_RECIPIENTS = ["ops@example.com"]
    bootstrap()
    Channel.objects.filter(name="Default email").update(name="Operations")
    bootstrap()
    assert list(Channel.objects.values_list("name", flat=True)) == ["Operations"]


def test_with_email_alerts_off_no_email_channel_is_made_by_bootstrap_or_the_daily_report(settings):
    settings.EMAIL_ALERT_RECIPIENTS = ["ops@example.com"]
    settings.ENABLE_EMAIL_ALERTS = False
    output = bootstrap()
    daily_report_send()
    assert not Channel.objects.exists()
    assert "Default email channel: none created (ENABLE_EMAIL_ALERTS is off)." in output


def test_without_recipients_bootstrap_says_which_variable_to_set():
    output = bootstrap()
    assert not Channel.objects.exists()
    assert "set EMAIL_ALERT_RECIPIENTS" in output


# --- SLACK_WEBHOOK_URL / ENABLE_SLACK_ALERTS ----------------------------------------------------------------


def test_slack_webhook_url_makes_the_default_slack_channel_once_and_admin_edits_survive(settings):
    settings.SLACK_WEBHOOK_URL = SLACK_URL
    settings.ENABLE_SLACK_ALERTS = True
    first = bootstrap()

    channel = Channel.objects.get()
    assert (channel.name, channel.kind, channel.target, channel.is_default, channel.is_enabled) == (
        "Default Slack",
        ChannelKind.SLACK,
        SLACK_URL,
        True,
        True,
    )
    assert "Default channel: Default Slack (Slack)." in first
    assert "XXXXXXXX" not in first  # the webhook's token is a secret

    bootstrap()
    assert Channel.objects.count() == 1

    Channel.objects.filter(pk=channel.pk).update(min_level="critical", is_enabled=False)
    bootstrap()
    channel.refresh_from_db()
    assert (Channel.objects.count(), channel.min_level, channel.is_enabled) == (1, "critical", False)


def test_with_slack_alerts_off_no_slack_channel_is_made(settings):
    settings.SLACK_WEBHOOK_URL = SLACK_URL
    settings.ENABLE_SLACK_ALERTS = False
    output = bootstrap()
    assert not Channel.objects.exists()
    assert "Default Slack channel: none created (ENABLE_SLACK_ALERTS is off)." in output


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://discord.com/api/webhooks/123/abc", "not a slack URL"),
        ("not a url", "not a URL apprise can send to"),
        ("", "is empty while ENABLE_SLACK_ALERTS is on"),
    ],
)
def test_a_bad_slack_webhook_url_names_the_variable_and_creates_nothing(settings, url, why):
    # Everything else would be created: the error must leave none of it behind.
    settings.DEFAULT_DAILY_BUDGET = "5"
    settings.EMAIL_ALERT_RECIPIENTS = ["ops@example.com"]
    settings.SLACK_WEBHOOK_URL = url
    settings.ENABLE_SLACK_ALERTS = True
    with pytest.raises(CommandError) as excinfo:
        bootstrap()
    message = str(excinfo.value)
    assert message.startswith("SLACK_WEBHOOK_URL: ") and why in message
    assert "bootstrap changed nothing" in message
    assert nothing_was_created()


# --- the settings, read from the environment --------------------------------------------------------------


SHOWN = (
    "DEFAULT_DAILY_BUDGET",
    "ENABLE_COST_MONITORING",
    "EMAIL_ALERT_RECIPIENTS",
    "ENABLE_EMAIL_ALERTS",
    "SLACK_WEBHOOK_URL",
    "ENABLE_SLACK_ALERTS",
)


def read_settings(**env: str) -> subprocess.CompletedProcess[str]:
    """The settings a process started with `env` reads (each variable here set, so a .env cannot decide)."""
    names = (*SHOWN, "ALERT_EMAIL_TO")
    clean = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("DJANGO_")}
    clean.update({name: "" for name in names})
    clean.update({"DJANGO_SETTINGS_MODULE": "costcontrol.settings.local", **env})
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(SHOWN)!r}}}, default=str))"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=clean, capture_output=True, text=True)


def shown(**env: str) -> dict[str, object]:
    result = read_settings(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_variables_defaults_and_the_older_email_name():
    assert shown() == {
        "DEFAULT_DAILY_BUDGET": None,
        "ENABLE_COST_MONITORING": True,
        "EMAIL_ALERT_RECIPIENTS": [],
        "ENABLE_EMAIL_ALERTS": True,
        "SLACK_WEBHOOK_URL": "",
        "ENABLE_SLACK_ALERTS": False,
    }
    older = shown(ALERT_EMAIL_TO="ops@example.com, cfo@example.com,")
    assert older["EMAIL_ALERT_RECIPIENTS"] == ["ops@example.com", "cfo@example.com"]
    newer = shown(ALERT_EMAIL_TO="old@example.com", EMAIL_ALERT_RECIPIENTS="new@example.com")
    assert newer["EMAIL_ALERT_RECIPIENTS"] == ["new@example.com"]

    given = shown(DEFAULT_DAILY_BUDGET="5.25", SLACK_WEBHOOK_URL=SLACK_URL, ENABLE_COST_MONITORING="off")
    assert (given["DEFAULT_DAILY_BUDGET"], given["ENABLE_SLACK_ALERTS"], given["ENABLE_COST_MONITORING"]) == (
        "5.25",
        True,  # on by default once the URL is set
        False,
    )
    assert shown(SLACK_WEBHOOK_URL=SLACK_URL, ENABLE_SLACK_ALERTS="false")["ENABLE_SLACK_ALERTS"] is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEFAULT_DAILY_BUDGET", "five"),
        ("DEFAULT_DAILY_BUDGET", "-5"),
        ("ENABLE_COST_MONITORING", "maybe"),
        ("ENABLE_EMAIL_ALERTS", "nope"),
        ("ENABLE_SLACK_ALERTS", "2"),
    ],
)
def test_a_bad_value_stops_the_process_naming_the_variable(name, value):
    result = read_settings(**{name: value})
    assert result.returncode != 0
    assert f"{name}={value!r}" in result.stderr
