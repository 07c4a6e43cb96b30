"""The alert rule and channel screens a finance lead reads: a rule said as a sentence with its threshold
formatted, values formatted by what the metric measures (money with its currency, a rate as a percent,
counts with thousands separators), secondary facts under the name, no channel target in the list, and
the rule list, the channel list and the daily report preview fitting 1440 px without scrolling sideways
(in headless Chromium, screenshots in var/test-artefacts/)."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import User
from django.urls import reverse

from alerts.models import AlertRule, Metric, Window
from alerts.services import alert_fire
from tests.alerts import test_admin_screens as screens
from tests.factories import AlertRuleFactory, ChannelFactory, TeamFactory
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db

browser = screens.browser  # headless Chromium at 1440x1000 (skipped, with the reason, where it is missing)

# A ledger amount as stored, or any number with trailing zeros past the cents (as the browser walk reads them).
RAW_NUMBER = re.compile(r"(?<![\d.,])\d[\d,]*\.(?:\d{7,}|\d{2,}0)(?![\d.])")


def text_of(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def columns(markup: str) -> list[str]:
    """The change list's columns by field (the checkbox column left out)."""
    head = markup.split('id="result_list"')[1].split("</thead>")[0]
    return re.findall(r'<th scope="col" class="[^"]*column-(\w+)', head)


def row_of(markup: str, name: str) -> str:
    """The text of the change list row that holds `name`."""
    rows = [text_of(f"<tr{row}") for row in markup.split("<tr")[1:] if name in html.unescape(row)]
    assert len(rows) == 1, f"{len(rows)} rows hold {name!r}"
    return rows[0]


# --- a rule, said for a person ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        (
            {"metric": Metric.SPEND, "scope": "provider:openai", "window": Window.LAST_DAY, "threshold": "50"},
            "Spend of provider:openai over the last 24 hours above 50.00 USD",
        ),
        ({"metric": Metric.SPEND, "window": Window.DAY, "threshold": "1234.5"}, "Spend today above 1,234.50 USD"),
        (
            {"metric": Metric.GPU_COST, "window": Window.MONTH, "threshold": "100"},
            "GPU cost this month above 100.00 USD",
        ),
        (
            {"metric": Metric.TOKENS, "scope": "service:search", "window": Window.LAST_HOUR, "threshold": "10000"},
            "Tokens used by service:search over the last 60 minutes above 10,000",
        ),
        (
            {"metric": Metric.ERROR_RATE, "window": Window.LAST_HOUR, "threshold": "10"},
            "Error rate over the last 60 minutes above 10 %",
        ),
        (
            {"metric": Metric.RATE_LIMITED, "window": Window.LAST_5_MINUTES, "threshold": "0"},
            "Rate-limit hits over the last 5 minutes above 0",
        ),
        (
            {"metric": Metric.COST_PER_LEAD, "window": Window.LAST_BATCH, "threshold": "0.0125"},
            "Cost per lead of the last closed batch above 0.0125 USD",
        ),
        (
            {"metric": Metric.COST_PER_LEAD_CHANGE, "window": Window.LAST_BATCH, "threshold": "40"},
            "Cost per lead of the last closed batch more than 40 % above the 7-day median",
        ),
        (
            {"metric": Metric.ANOMALY, "scope": "team:growth", "window": Window.LAST_DAY, "threshold": "8"},
            "Spend anomaly score of team:growth over the last 24 hours above 8",
        ),
    ],
)
def test_a_rule_describes_itself_as_a_sentence_with_its_threshold_formatted(fields, sentence, settings):
    settings.LEAD_UNIT_NAME = "lead"
    fields = {"scope": "global", **fields, "threshold": Decimal(fields["threshold"]).quantize(Decimal("1E-9"))}
    assert AlertRule(name="r", **fields).describe() == sentence


@pytest.mark.parametrize(
    ("metric", "value", "shown"),
    [
        (Metric.SPEND, "114.230000000", "114.23 USD"),
        (Metric.SPEND, "0.210433671", "0.21 USD"),
        (Metric.GPU_COST, "12345.675000000", "12,345.68 USD"),
        (Metric.COST_PER_LEAD, "0.012352371", "0.0124 USD"),
        (Metric.ERROR_RATE, "2.630000000", "2.63 %"),
        (Metric.COST_PER_LEAD_CHANGE, "114.230000000", "114.23 %"),
        (Metric.TOKENS, "558378.000000000", "558,378"),
        (Metric.UNPRICED, "0E-9", "0"),
        (Metric.ANOMALY, "12.340000000", "12.34"),
    ],
)
def test_a_rules_value_is_shown_by_what_its_metric_measures(metric, value, shown):
    assert AlertRule(metric=metric).figure(Decimal(value)) == shown


# --- the rule list ------------------------------------------------------------------------------------------


def test_the_rule_list_says_each_rule_in_words_with_its_figures_formatted(admin_client, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    growth = TeamFactory(name="growth")
    checked = datetime(2026, 12, 4, 14, 5, tzinfo=UTC)
    AlertRuleFactory(
        name="Spend today",
        metric=Metric.SPEND,
        window=Window.DAY,
        threshold=Decimal("500.000000000"),
        last_value=Decimal("114.230000000"),
        last_evaluated_at=checked,
    )
    AlertRuleFactory(
        name="Tokens, last hour",
        metric=Metric.TOKENS,
        window=Window.LAST_HOUR,
        threshold=Decimal("10000.000000000"),
        last_value=Decimal("558378.000000000"),
        last_evaluated_at=checked,
        cooldown=timedelta(minutes=15),
    )
    AlertRuleFactory(
        name="Cost per lead, last batch",
        metric=Metric.COST_PER_LEAD,
        window=Window.LAST_BATCH,
        threshold=Decimal("3.000000000"),
        last_value=Decimal("0.012352371"),
        last_evaluated_at=checked,
    )
    AlertRuleFactory(
        name="Growth error rate",
        metric=Metric.ERROR_RATE,
        window=Window.LAST_HOUR,
        scope="team:growth",
        team=growth,
        threshold=Decimal("10"),
        last_value=Decimal("12.350000000"),
        last_evaluated_at=checked,
        is_enabled=False,
        last_error="OperationalError: database is locked",
    )
    AlertRuleFactory(name="Unpriced today", metric=Metric.UNPRICED, threshold=Decimal("0"))

    response = admin_client.get(reverse("admin:alerts_alertrule_changelist"))
    assert response.status_code == 200
    shown = response.content.decode()
    assert columns(shown) == ["name_shown", "condition", "last_value_shown", "level_shown"]
    assert row_of(shown, "Spend today") == (
        "Spend today Spend today above 500.00 USD 114.23 USD checked 2026-12-04 15:05 warning reminder every 1 hour"
    )
    assert "558,378 checked" in row_of(shown, "Tokens, last hour")
    assert "above 10,000" in row_of(shown, "Tokens, last hour")
    assert "reminder every 15 minutes" in row_of(shown, "Tokens, last hour")
    assert "0.0124 USD" in row_of(shown, "Cost per lead, last batch")
    growth_row = row_of(shown, "Growth error rate")
    assert growth_row.startswith("Growth error rate team growth · disabled Error rate of team:growth")
    assert "above 10 % 12.35 % checked" in growth_row
    assert "OperationalError: database is locked" in growth_row
    assert "Unpriced events today above 0 not checked yet" in row_of(shown, "Unpriced today")
    assert not RAW_NUMBER.findall(text_of(shown)), RAW_NUMBER.findall(text_of(shown))


@pytest.mark.parametrize(("threshold", "written"), [("500", "500"), ("0", "0"), ("0.005", "0.005")])
def test_a_rules_page_shows_its_threshold_as_written_and_its_last_value_formatted(admin_client, threshold, written):
    rule = AlertRuleFactory(
        name="Spend today",
        threshold=Decimal(threshold),
        last_value=Decimal("114.230000000"),
        last_evaluated_at=datetime(2026, 12, 4, 14, 5, tzinfo=UTC),
    )
    rule.refresh_from_db()  # as stored: 500.000000000, 0E-9
    shown = admin_client.get(reverse("admin:alerts_alertrule_change", args=[rule.pk])).content.decode()
    assert re.search(rf'name="threshold" value="{re.escape(written)}"', shown), re.findall(
        r'name="threshold"[^>]*', shown
    )
    assert "USD for spend, GPU cost and cost per lead" in shown  # what the threshold is in
    assert "114.23 USD" in text_of(shown)
    assert "114.230000000" not in shown


def test_an_alerts_page_says_its_rule_in_words_and_its_figures_as_the_rule_measures_them(admin_client):
    rule = AlertRuleFactory(
        name="Cost per lead, last batch",
        metric=Metric.COST_PER_LEAD,
        window=Window.LAST_BATCH,
        threshold=Decimal("0.005"),
    )
    alert = alert_fire(
        key=f"rule:{rule.pk}:global",
        source="rule",
        rule=rule,
        level="warning",
        scope="global",
        title="Cost per lead, last batch: 0.0057 USD (last closed batch)",
        message="Rule 'Cost per lead, last batch': cost per lead is 0.0057 USD, above 0.0050 USD.",
        value=Decimal("0.005651838"),
        threshold=rule.threshold,
        currency="USD",
        cooldown=timedelta(hours=1),
    ).alert
    shown = text_of(admin_client.get(reverse("admin:alerts_alert_change", args=[alert.pk])).content.decode())
    assert "rule Cost per lead, last batch (Cost per lead of the last closed batch above 0.005 USD)" in shown
    assert "0.0057 USD (threshold 0.005 USD)" in shown
    assert "0.005651838" not in shown


# --- the channel list --------------------------------------------------------------------------------------


def test_the_channel_list_folds_its_facts_under_the_name_and_never_shows_a_target(admin_client):
    team = TeamFactory(name="growth")
    ChannelFactory(name="Finance email", kind="email", is_default=True, receives_reports=True)
    ChannelFactory(
        name="Growth Slack",
        kind="slack",
        target="https://hooks.slack.com/services/T0001/B0001/SECRETTOKENSECRET",
        team=team,
        min_level="warning",
        max_per_hour=1500,
        is_enabled=False,
        disabled_reason="Slack answered 404 no_service: the webhook was removed",
    )
    ChannelFactory(name="On-call pager", kind="email", min_level="exceeded", max_per_hour=0)

    response = admin_client.get(reverse("admin:alerts_channel_changelist"))
    assert response.status_code == 200
    shown = response.content.decode()
    assert columns(shown) == ["name_shown", "sends", "role", "state"]
    assert row_of(shown, "Finance email") == (
        "Finance email email · organisation-wide every level at most 20 an hour, then a digest "
        "default channel receives the daily report enabled"
    )
    assert row_of(shown, "Growth Slack") == (
        "Growth Slack Slack · team growth warning and above at most 1,500 an hour, then a digest - "
        "disabled Slack answered 404 no_service: the webhook was removed"
    )
    assert "exceeded only no hourly limit" in row_of(shown, "On-call pager")
    assert "SECRETTOKEN" not in shown and "hooks.slack.com" not in shown


# --- at 1440 px, in a real browser --------------------------------------------------------------------------


def test_the_rule_and_channel_lists_and_the_report_preview_fit_1440_pixels(
    transactional_db, live_server, browser, settings, gpt4o_prices
):
    from selenium.webdriver.common.by import By

    User.objects.create_superuser("browser", "browser@example.com", screens.PASSWORD)
    team = TeamFactory(name="platform-engineering")
    for n, metric in enumerate(Metric.values):
        per_lead = metric in (Metric.COST_PER_LEAD, Metric.COST_PER_LEAD_CHANGE)
        AlertRuleFactory(
            name=f"{metric.replace('_', ' ')} of the platform team's batch embedding jobs, rule {n}",
            metric=metric,
            scope="global" if per_lead else "team:platform-engineering/service:batch-embedding-pipeline-eu-west",
            team=None if per_lead else team,
            window=Window.LAST_BATCH if per_lead else Window.LAST_DAY,
            threshold=Decimal("1234.567800000"),
            last_value=Decimal("123456.789012345"),
            last_evaluated_at=datetime(2026, 12, 4, 14, 5, tzinfo=UTC),
            last_error="ConnectionRefusedError: [Errno 111] Connection refused while reading the anomaly scores"
            if n % 3 == 0
            else "",
            is_enabled=n % 2 == 0,
        )
    ChannelFactory(name="Finance email", kind="email", is_default=True, receives_reports=True)
    ChannelFactory(
        name="platform on-call webhook for the batch embedding pipelines",
        kind="webhook",
        target="https://hooks.example.com/a-rather-long-webhook-path/for-the-platform-team?token=SECRET",
        team=team,
        min_level="critical",
        is_enabled=False,
        disabled_reason="permanent delivery error: hooks.example.com answered 410 Gone for "
        "/a-rather-long-webhook-path/for-the-platform-team (the hook was deleted)",
    )
    day = date(2026, 12, 3)
    for n, service in enumerate(("lead-scoring", "batch-embedding-pipeline-for-the-platform-team-eu-west-1")):
        cost_entry_record(
            provider="openai",
            model="gpt-4o",
            amount=f"{1234.5 + n}",
            occurred_at=datetime(2026, 12, 3, 9 + n, 30, tzinfo=UTC),
            idempotency_key=f"fit-{n}",
            service=service,
            # An end user id as some clients send it: long enough to need more than the page's width.
            subject=f"org-7f3a9c2e-5b1d-4e8a-9f6c-2d4b8e1a7c3f/workspace-{n:04d}/user-b2c4e6f8-a1b3-4c5d-8e9f-0a1b2c3d4e5f"
            "/session-3e5f7a9b-1c2d-4e6f-8a0b-c1d2e3f4a5b6",
        )

    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("browser")
    browser.find_element(By.NAME, "password").send_keys(screens.PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    assert browser.execute_script("return window.innerWidth") == 1440

    for name, url, columns in (
        (
            "alert-rules-list.png",
            reverse("admin:alerts_alertrule_changelist"),
            ("name_shown", "condition", "last_value_shown", "level_shown"),
        ),
        ("channels-list.png", reverse("admin:alerts_channel_changelist"), ("name_shown", "sends", "role", "state")),
    ):
        size = screens.look(browser, live_server.url + url, name)
        assert size["scroll"] <= size["inner"], f"{name}: {size['scroll']} px wide in a {size['inner']} px window"
        assert size["results"] <= size["box"], f"{name}: the list scrolls sideways ({size['results']} > {size['box']})"
        for column in columns:
            header = browser.find_element(By.CSS_SELECTOR, f"#result_list th.column-{column}")
            right = browser.execute_script("return arguments[0].getBoundingClientRect().right", header)
            assert right <= size["inner"], f"{name}: the column {column} is off screen"

    # The report's plain-text part, opened: its long lines wrap inside the page.
    with time_machine.travel(datetime(2026, 12, 4, 8, 0, tzinfo=UTC)):
        browser.get(f"{live_server.url}{reverse('admin:alerts_daily_report')}?day={day.isoformat()}")
    browser.execute_script("document.querySelector('details.cc-report-text').open = true")
    text = browser.find_element(By.ID, "cc-report-text")
    widths = browser.execute_script(
        "const pre = arguments[0]; return [pre.scrollWidth, pre.clientWidth, document.documentElement.scrollWidth];",
        text,
    )
    browser.execute_script("arguments[0].scrollIntoView()", text)
    browser.save_screenshot(str(screens.ARTEFACTS / "daily-report-text.png"))
    assert "batch-embedding-pipeline-for-the-platform-team-eu-west-1" in text.text
    assert widths[0] <= widths[1] + 1, f"the plain-text part scrolls sideways ({widths[0]} px in {widths[1]} px)"
    assert widths[2] <= 1440
