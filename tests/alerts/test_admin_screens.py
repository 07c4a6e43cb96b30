"""The alert and notification screens a finance lead reads: they say only what is true (who was told,
and a banner while open alerts have nowhere to go), act from the alert's own page, link to what
raised an alert and the cost entries that drove it, keep history, use words and formatted money, and
fit 1440 px without scrolling sideways (in headless Chromium, screenshots in var/test-artefacts/)."""

from __future__ import annotations

import html
import itertools
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alerts.evaluation import alerts_evaluate
from alerts.models import Alert, AlertState, Metric, Notification, NotificationStatus, Window
from alerts.services import alert_fire
from core.periods import period_bounds
from tests.chromium import chromium, missing_browser
from tests.factories import (
    AlertRuleFactory,
    BudgetFactory,
    ChannelFactory,
    NotificationFactory,
    PriceFactory,
    TeamFactory,
)
from tracking.models import CostEntry
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db
_keys = itertools.count()


@pytest.fixture
def prices(gpt4o_prices):
    """Providers the ledger knows: openai (gpt-4o) and anthropic."""
    PriceFactory(provider="anthropic", model="claude-sonnet-4")


NOBODY = "no channel: nobody was told"


def spend(amount: str, at: datetime, **fields: Any) -> CostEntry:
    return cost_entry_record(
        provider="openai",
        model=fields.pop("model", "gpt-4o"),
        amount=amount,
        occurred_at=at,
        idempotency_key=f"screens-{next(_keys)}",
        **fields,
    ).entry


def fire(title: str = "Spend today: 612.00 USD (today)", **kwargs: Any) -> Alert:
    fields: dict[str, Any] = {
        "key": f"rule:9:screens-{next(_keys)}",
        "source": "rule",
        "level": "warning",
        "scope": "global",
        "title": title,
        "message": "Rule 'Spend today': spend of global today is 612.00 USD, above 500.00 USD.",
        "value": Decimal("612"),
        "threshold": Decimal("500"),
        "currency": "USD",
        "cooldown": timedelta(hours=1),
    }
    fields.update(kwargs)
    return alert_fire(**fields).alert


def page(client: Client, alert: Alert) -> str:
    response = client.get(reverse("admin:alerts_alert_change", args=[alert.pk]))
    assert response.status_code == 200
    return response.content.decode()


def listing(client: Client, **params: str) -> str:
    response = client.get(reverse("admin:alerts_alert_changelist"), params)
    assert response.status_code == 200
    return response.content.decode()


def text_of(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def staff(name: str, *codenames: str, team: Any = None) -> Client:
    user = User.objects.create_user(name, password="pw-not-used", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="alerts", codename__in=codenames))
    if team is not None:
        team.members.add(user)
    client = Client()
    client.force_login(user)
    return client


# --- say only what is true ------------------------------------------------------------------------


def test_an_alert_no_channel_took_says_nobody_was_told_and_counts_no_notification(admin_client, settings):
    settings.EMAIL_ALERT_RECIPIENTS = []
    alert = fire()
    assert Notification.objects.count() == 0
    assert alert.notify_count == 0  # no channel took it: not announced
    shown = text_of(page(admin_client, alert))
    assert NOBODY in shown
    assert "Notifications sent: 1" not in shown and "notifications sent" not in shown.lower()
    assert "nobody: no enabled channel takes this alert." in shown
    assert NOBODY in text_of(listing(admin_client))


def test_a_notification_counts_only_what_became_of_the_notifications_that_exist(admin_client):
    ops = ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    mail = ChannelFactory(name="finance", is_default=True)
    alert = fire()
    Notification.objects.filter(alert=alert, channel=ops).update(status=NotificationStatus.SENT)
    Notification.objects.filter(alert=alert, channel=mail).update(status=NotificationStatus.FAILED)
    assert "1 sent, 1 failed" in text_of(page(admin_client, alert))
    assert "1 sent, 1 failed" in text_of(listing(admin_client))
    Notification.objects.filter(alert=alert, channel=ops).update(status=NotificationStatus.FAILED)
    assert "2 failed: nobody was told" in text_of(page(admin_client, alert))


def test_the_index_and_the_dashboard_warn_while_open_alerts_have_nowhere_to_go(admin_client, settings):
    settings.EMAIL_ALERT_RECIPIENTS = []
    alert = fire(title="Spend today: nobody hears me")
    for url in (reverse("admin:index"), reverse("admin:analytics_dashboard_changelist")):
        shown = admin_client.get(url).content.decode()
        assert 'id="cc-unheard-alerts"' in shown, url
        assert "1 open alert has nowhere to go" in text_of(shown)
        assert "EMAIL_ALERT_RECIPIENTS is not set" in shown
        assert f'href="{reverse("admin:alerts_channel_add")}"' in shown
        assert "Spend today: nobody hears me" in shown
    # The banner's list: exactly the alerts with nowhere to go.
    link = re.search(r'href="([^"]*heard=nowhere[^"]*)"', admin_client.get(reverse("admin:index")).content.decode())
    assert link is not None
    assert "Spend today: nobody hears me" in admin_client.get(html.unescape(link.group(1))).content.decode()

    # A disabled channel, or one above the alert's level, hears nothing either.
    channel = ChannelFactory(name="ops", is_default=True, is_enabled=False)
    assert 'id="cc-unheard-alerts"' in admin_client.get(reverse("admin:index")).content.decode()
    channel.is_enabled, channel.min_level = True, "critical"
    channel.save()
    assert 'id="cc-unheard-alerts"' in admin_client.get(reverse("admin:index")).content.decode()
    channel.min_level = "info"
    channel.save()
    assert 'id="cc-unheard-alerts"' not in admin_client.get(reverse("admin:index")).content.decode()
    assert "ops (email)" in text_of(page(admin_client, alert))  # who hears it now
    # A resolved alert needs nobody.
    channel.delete()
    Alert.objects.filter(pk=alert.pk).update(state=AlertState.RESOLVED)
    assert 'id="cc-unheard-alerts"' not in admin_client.get(reverse("admin:index")).content.decode()


def test_a_teams_staff_see_the_banner_for_their_teams_alerts_only():
    alpha, bravo = TeamFactory(name="alpha"), TeamFactory(name="bravo")
    rule = AlertRuleFactory(name="bravo rule", scope="team:bravo", team=bravo)
    fire(title="bravo spend", rule=rule, scope="team:bravo")
    alice = staff("alice", "view_alert", team=alpha)
    assert 'id="cc-unheard-alerts"' not in alice.get(reverse("admin:index")).content.decode()
    bob = staff("bob", "view_alert", team=bravo)
    shown = bob.get(reverse("admin:index")).content.decode()
    assert 'id="cc-unheard-alerts"' in shown and "bravo spend" in shown
    assert "EMAIL_ALERT_RECIPIENTS" not in shown  # the operator's setting: for superusers
    assert 'id="cc-unheard-alerts"' not in staff("carol", team=bravo).get(reverse("admin:index")).content.decode()


def test_the_alert_list_counts_notifications_without_a_read_per_alert(admin_client, django_assert_max_num_queries):
    ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    for n in range(30):
        fire(title=f"alert {n}")
    with django_assert_max_num_queries(15):
        shown = text_of(listing(admin_client))
    assert shown.count("1 waiting to be sent") == 30


# --- act from the alert's own page ----------------------------------------------------------------------


def press(client: Client, alert: Alert, verb: str, **kwargs: Any) -> Any:
    return client.post(reverse("admin:alerts_alert_change", args=[alert.pk]), {"_alert": verb}, **kwargs)


def test_acknowledge_mute_and_resolve_are_buttons_on_the_alerts_own_page(admin_client, admin_user, prices):
    ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    rule = AlertRuleFactory(name="Spend today", metric=Metric.SPEND, window=Window.DAY, threshold=Decimal("5"))
    spend("6", timezone.now())
    alerts_evaluate()
    alert = Alert.objects.get(rule=rule)
    shown = page(admin_client, alert)
    for verb, label in (
        ("acknowledge", "Acknowledge"),
        ("mute_1h", "Mute for 1 hour"),
        ("mute_24h", "Mute for 1 day"),
        ("mute_period", "Mute until the period ends"),
        ("resolve", "Resolve"),
    ):
        assert re.search(rf'<button type="submit" name="_alert" value="{verb}"[^>]*>{label}</button>', shown), verb
    assert "csrfmiddlewaretoken" in shown.split('id="alert-actions"')[1].split("</form>")[0]

    response = press(admin_client, alert, "acknowledge", follow=True)
    alert.refresh_from_db()
    assert alert.acknowledged_by == admin_user and "1 alert(s) acknowledged." in response.content.decode()
    assert 'value="acknowledge"' not in response.content.decode()  # done: the button is gone

    before = timezone.now()
    press(admin_client, alert, "mute_1h")
    alert.refresh_from_db()
    assert before + timedelta(minutes=59) < alert.muted_until <= timezone.now() + timedelta(hours=1)
    press(admin_client, alert, "mute_24h")
    alert.refresh_from_db()
    assert alert.muted_until > timezone.now() + timedelta(hours=23)
    press(admin_client, alert, "mute_period")
    alert.refresh_from_db()
    assert alert.muted_until == period_bounds("daily", timezone.now())[1]  # the end of today, local time
    response = press(admin_client, alert, "unmute", follow=True)
    alert.refresh_from_db()
    assert alert.muted_until is None and "1 alert(s) unmuted." in response.content.decode()

    response = press(admin_client, alert, "resolve", follow=True)
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and "1 alert(s) resolved." in response.content.decode()
    assert list(Notification.objects.filter(alert=alert).values_list("kind", flat=True).order_by("pk")) == [
        "firing",
        "resolved",
    ]
    assert 'id="alert-actions"' not in response.content.decode()  # nothing left to do on a resolved alert
    history = admin_client.get(reverse("admin:alerts_alert_history", args=[alert.pk])).content.decode()
    for label in ("Acknowledge", "Mute for 1 hour", "Mute until the period ends", "Unmute", "Resolve"):
        assert label in history


def test_the_list_can_mute_until_the_period_ends_and_resolve_too(admin_client, prices):
    ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    budget = BudgetFactory(name="OpenAI monthly", scope="provider:openai", amount=Decimal("100"))
    spend("85", timezone.now())
    alerts_evaluate()
    alert = Alert.objects.get(budget=budget)
    url = reverse("admin:alerts_alert_changelist")
    admin_client.post(url, {"action": "mute_period", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.muted_until == alert.budget_period.end
    admin_client.post(url, {"action": "resolve", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED


def test_the_buttons_need_the_change_permission_the_alerts_team_and_a_csrf_token(admin_user):
    alpha, bravo = TeamFactory(name="alpha"), TeamFactory(name="bravo")
    rule = AlertRuleFactory(name="alpha rule", scope="team:alpha", team=alpha)
    alert = fire(rule=rule, scope="team:alpha")

    viewer = staff("viewer", "view_alert", team=alpha)
    shown = viewer.get(reverse("admin:alerts_alert_change", args=[alert.pk])).content.decode()
    assert 'id="alert-actions"' not in shown
    assert press(viewer, alert, "acknowledge").status_code == 403

    other = staff("other", "view_alert", "change_alert", team=bravo)
    response = press(other, alert, "acknowledge")
    assert response.status_code == 302 and response.url == reverse("admin:index")  # as a missing object

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    assert press(strict, alert, "acknowledge").status_code == 403

    member = staff("member", "view_alert", "change_alert", team=alpha)
    assert press(member, alert, "explode").status_code == 400
    alert.refresh_from_db()
    assert alert.acknowledged_at is None and alert.muted_until is None
    assert press(member, alert, "acknowledge").status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_at is not None


def test_a_filter_lists_the_alerts_nobody_has_acknowledged(admin_client):
    waiting = fire(title="nobody is on this one")
    handled = fire(title="someone is on this one")
    admin_client.post(
        reverse("admin:alerts_alert_changelist"), {"action": "acknowledge", "_selected_action": [handled.pk]}
    )
    resolved = fire(title="over and done")
    Alert.objects.filter(pk=resolved.pk).update(state=AlertState.RESOLVED)
    shown = listing(admin_client, acknowledged="no")
    assert waiting.title in shown and handled.title not in shown and resolved.title not in shown
    shown = listing(admin_client, acknowledged="yes")
    assert handled.title in shown and waiting.title not in shown


def test_alert_history_cannot_be_deleted_from_the_admin(admin_client):
    channel = ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    alert = fire()
    notification = Notification.objects.get(alert=alert)
    assert admin_client.get(reverse("admin:alerts_alert_delete", args=[alert.pk])).status_code == 403
    assert admin_client.get(reverse("admin:alerts_notification_delete", args=[notification.pk])).status_code == 403
    for model, pk in (("alert", alert.pk), ("notification", notification.pk)):
        url = reverse(f"admin:alerts_{model}_changelist")
        assert 'value="delete_selected"' not in admin_client.get(url).content.decode()
        admin_client.post(url, {"action": "delete_selected", "_selected_action": [pk], "post": "yes"})
    assert Alert.objects.filter(pk=alert.pk).exists() and Notification.objects.filter(pk=notification.pk).exists()
    # Nor through what they hang on: a rule with alerts, a channel with notifications (disable those).
    rule = AlertRuleFactory(name="Spend today")
    fire(rule=rule)
    for name, pk in (("alertrule", rule.pk), ("channel", channel.pk)):
        url = reverse(f"admin:alerts_{name}_delete", args=[pk])
        assert "Cannot delete" in admin_client.get(url).content.decode()
        assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Alert.objects.filter(rule=rule).exists() and Notification.objects.filter(channel=channel).exists()


# --- links -------------------------------------------------------------------------------------------


def entries_link(shown: str) -> str:
    match = re.search(r'href="(/admin/tracking/costentry/\?[^"]+)"', shown)
    assert match is not None, "no link to the cost entries"
    return html.unescape(match.group(1))


def listed_entries(client: Client, url: str) -> set[int]:
    response = client.get(url)
    assert response.status_code == 200 and "?e=1" not in response.get("Location", "")
    return {int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', response.content.decode())}


def test_a_budget_alert_links_to_its_budget_and_the_entries_of_its_period(admin_client, prices):
    now = timezone.now()
    budget = BudgetFactory(name="OpenAI monthly", scope="provider:openai", amount=Decimal("100"))
    month_start = period_bounds("monthly", now)[0]
    inside = spend("85", now - timedelta(minutes=1))
    last_month = spend("20", month_start - timedelta(minutes=1))
    other_provider = cost_entry_record(
        provider="anthropic", model="claude-sonnet-4", amount="7", occurred_at=now, idempotency_key="screens-anthropic"
    ).entry
    alerts_evaluate()
    alert = Alert.objects.get(budget=budget)
    shown = page(admin_client, alert)
    assert f'href="{reverse("admin:budgets_budget_change", args=[budget.pk])}"' in shown
    url = entries_link(shown)
    params = parse_qs(urlsplit(url).query)
    assert params["provider"] == ["openai"]
    assert datetime.fromisoformat(params["occurred_at__gte"][0]) == month_start
    listed = listed_entries(admin_client, url)
    assert inside.pk in listed and last_month.pk not in listed and other_provider.pk not in listed
    # Figures: the money a person reads.
    assert "85.00 USD (limit 100.00 USD)" in text_of(shown)


def test_a_rule_alert_links_to_its_rule_and_the_entries_of_its_scope_and_window(admin_client, prices):
    alpha = TeamFactory(name="alpha")
    ChannelFactory(name="alpha hook", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True, team=alpha)
    rule = AlertRuleFactory(
        name="alpha gpt-4o today",
        metric=Metric.SPEND,
        window=Window.DAY,
        scope="team:alpha/model:gpt-4o",
        team=alpha,
        threshold=Decimal("5"),
    )
    now = timezone.now()
    today = period_bounds("daily", now)[0]
    ours = spend("6", now - timedelta(seconds=5), team="alpha")
    yesterday = spend("1", today - timedelta(minutes=1), team="alpha")
    other_model = spend("2", now, team="alpha", model="gpt-4o-mini")
    no_team = spend("3", now)
    alerts_evaluate()
    alert = Alert.objects.get(rule=rule)
    shown = page(admin_client, alert)
    assert f'href="{reverse("admin:alerts_alertrule_change", args=[rule.pk])}"' in shown
    url = entries_link(shown)
    params = parse_qs(urlsplit(url).query)
    assert params["team"] == [str(alpha.pk)] and params["model"] == ["gpt-4o"]
    listed = listed_entries(admin_client, url)
    assert listed == {ours.pk}, (yesterday.pk, other_model.pk, no_team.pk)


# --- words, numbers, tables ---------------------------------------------------------------------------


def test_pages_use_words_formatted_money_and_tables_not_codes_and_raw_json(admin_client):
    ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    alert = fire(value=Decimal("1234.5"), threshold=Decimal("1000"))
    shown = text_of(page(admin_client, alert))
    assert "1,234.50 USD (threshold 1,000.00 USD)" in shown
    assert "conditional UPDATE" not in shown  # help for the person, not the developer
    notification = Notification.objects.get(alert=alert)
    raw = admin_client.get(reverse("admin:alerts_notification_change", args=[notification.pk])).content.decode()
    assert '{"alert"' not in raw and "&quot;alert&quot;" not in raw
    table = raw.split('<table class="cc-payload">', 1)[1]
    cells = text_of(table[: table.index("</div>")])
    for words in (
        "raised by alert rule",
        "level warning",
        "value 1,234.50 USD",
        "threshold 1,000.00 USD",
        "state firing",
    ):
        assert words in cells, words
    assert "alert number" in cells and "how-manieth" not in raw


def test_the_notification_list_shows_the_next_attempt_only_while_one_is_due(admin_client):
    channel = ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook")
    NotificationFactory(channel=channel, subject="waits for a retry", last_error="connection refused")
    NotificationFactory(channel=channel, subject="went out", status=NotificationStatus.SENT)
    shown = admin_client.get(reverse("admin:alerts_notification_changelist")).content.decode()
    waiting = next(row for row in shown.split("<tr") if "waits for a retry" in row)
    went_out = next(row for row in shown.split("<tr") if "went out" in row)
    assert re.search(r'class="field-next_attempt">[^-<][^<]*\d:\d\d[^<]*<', waiting)
    assert re.search(r'class="field-next_attempt">-<', went_out)
    assert "connection refused" in waiting


# --- at 1440 px, in a real browser ------------------------------------------------------------------------

ARTEFACTS = Path(os.environ.get("COSTCONTROL_TEST_ARTEFACTS") or django_settings.BASE_DIR / "var" / "test-artefacts")
PASSWORD = "browser-test-password"


@pytest.fixture
def browser() -> Iterator[Any]:
    if reason := missing_browser():
        pytest.skip(reason)
    with chromium() as driver:
        yield driver


def look(driver: Any, url: str, name: str) -> dict[str, int]:
    """Open a page at 1440x1000, save its screenshot, and measure it: the page, and the change list's
    results box (the admin scrolls a wide table inside it rather than the page)."""
    driver.get(url)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTEFACTS / name))
    return driver.execute_script(
        "const results = document.querySelector('#changelist .results');"
        "return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " results: results ? results.scrollWidth : 0, box: results ? results.clientWidth : 0};"
    )


def test_the_alert_and_notification_screens_fit_1440_pixels_without_scrolling_sideways(
    transactional_db, live_server, browser, settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    User.objects.create_superuser("browser", "browser@example.com", PASSWORD)
    team = TeamFactory(name="platform-engineering")
    hook = ChannelFactory(
        name="platform on-call webhook",
        kind="webhook",
        target="http://127.0.0.1:9/a-rather-long-webhook-path/for-the-platform-team",
        is_default=True,
        team=team,
    )
    rule = AlertRuleFactory(
        name="Spend of the platform team's batch embedding jobs in the last 24 hours",
        scope="team:platform-engineering/service:batch-embedding-pipeline-eu-west",
        team=team,
        window=Window.LAST_DAY,
    )
    moment = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)
    alerts = []
    with time_machine.travel(moment, tick=False):
        for n in range(12):
            value = Decimal(1234567 + n * 100) / 100
            alerts.append(
                fire(
                    title=f"{rule.name}: {value:,} USD (last 24 hours), far above what the team planned",
                    message=f"Rule '{rule.name}': spend of {rule.scope} in the last 24 hours is {value:,} USD, "
                    "above 1,000.00 USD.",
                    rule=rule,
                    scope=rule.scope,
                    value=value,
                    threshold=Decimal("1000"),
                )
            )
    Notification.objects.filter(alert__in=alerts[:6]).update(
        status=NotificationStatus.PENDING,
        attempts=3,
        last_error="ConnectionRefusedError: [Errno 111] Connection refused while posting to the platform "
        "on-call webhook at 127.0.0.1:9",
    )
    Alert.objects.filter(pk__in=[a.pk for a in alerts[:4]]).update(
        acknowledged_at=moment, muted_until=timezone.now() + timedelta(days=1)
    )
    assert hook.pk

    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("browser")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    assert browser.execute_script("return window.innerWidth") == 1440

    for name, url, columns in (
        (
            "alerts-list.png",
            reverse("admin:alerts_alert_changelist"),
            ("title_shown", "level_shown", "state_shown", "told", "fired"),
        ),
        (
            "notifications-list.png",
            reverse("admin:alerts_notification_changelist"),
            ("subject_shown", "kind", "channel_shown", "status_shown", "created", "next_attempt", "last_error_short"),
        ),
        ("alert-page.png", reverse("admin:alerts_alert_change", args=[alerts[8].pk]), ()),
    ):
        size = look(browser, live_server.url + url, name)
        assert size["scroll"] <= size["inner"], f"{name}: {size['scroll']} px wide in a {size['inner']} px window"
        assert size["results"] <= size["box"], f"{name}: the list scrolls sideways ({size['results']} > {size['box']})"
        for column in columns:
            header = browser.find_element(By.CSS_SELECTOR, f"#result_list th.column-{column}")
            right = browser.execute_script("return arguments[0].getBoundingClientRect().right", header)
            assert right <= size["inner"], f"{name}: the column {column} is off screen"
        if name == "alerts-list.png":
            # A long title wraps to two lines at most.
            title = browser.find_element(By.CSS_SELECTOR, "#result_list .field-title_shown .cc-two-lines")
            lines = browser.execute_script(
                "const s = getComputedStyle(arguments[0]);"
                "return Math.round(arguments[0].getBoundingClientRect().height / parseFloat(s.lineHeight));",
                title,
            )
            assert 1 <= lines <= 2
            states = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list .field-state_shown")]
            assert sum("acknowledged by" in state and "muted until" in state for state in states) == 4
        if name == "notifications-list.png":
            errors = [
                cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list .field-last_error_short")
            ]
            assert sum(error.startswith("ConnectionRefusedError") for error in errors) == 6
    buttons = browser.find_elements(By.CSS_SELECTOR, "#alert-actions button")
    assert [b.text for b in buttons] == [
        "Acknowledge",
        "Mute for 1 hour",
        "Mute for 1 day",
        "Resolve",
    ]
    buttons[0].click()
    # The action posts and the page comes back with its message: wait for it (a loaded machine is slow).
    message = WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist"))[0]
    assert "1 alert(s) acknowledged." in message.text
    browser.save_screenshot(str(ARTEFACTS / "alert-page-acknowledged.png"))
    told = browser.find_element(By.XPATH, "//h2[normalize-space()='Who was told']")
    browser.execute_script("arguments[0].scrollIntoView()", told)
    browser.save_screenshot(str(ARTEFACTS / "alert-page-who-was-told.png"))
    assert "1 waiting to be sent" in browser.find_element(By.CSS_SELECTOR, ".field-told").text

    # Nowhere to go: the banner on the index and the dashboard.
    settings.EMAIL_ALERT_RECIPIENTS = []
    fire(title="Spend today: 612.00 USD (today)")
    for name, url in (
        ("admin-index-banner.png", reverse("admin:index")),
        ("dashboard-banner.png", reverse("admin:analytics_dashboard_changelist")),
    ):
        size = look(browser, live_server.url + url, name)
        banner = browser.find_element(By.ID, "cc-unheard-alerts")
        assert banner.is_displayed() and "1 open alert has nowhere to go" in banner.text
        assert browser.execute_script("return arguments[0].getBoundingClientRect().bottom", banner) < 1000
        assert size["scroll"] <= size["inner"]

    # The daily report preview: the email's HTML in its frame, sized to it.
    size = look(browser, live_server.url + reverse("admin:alerts_daily_report"), "daily-report-preview.png")
    assert size["scroll"] <= size["inner"]
    frame = browser.find_element(By.ID, "cc-report-html")
    assert browser.execute_script("return arguments[0].contentDocument.body.innerText", frame).startswith(
        "costcontrol daily report"
    )
    assert frame.size["height"] > 600


def test_a_counts_value_in_a_notifications_payload_has_thousands_separators(admin_client):
    ChannelFactory(name="ops", kind="webhook", target="http://127.0.0.1:9/hook", is_default=True)
    alert = fire(value=Decimal("558378"), threshold=Decimal("10000"), currency="")
    notification = Notification.objects.get(alert=alert)
    raw = admin_client.get(reverse("admin:alerts_notification_change", args=[notification.pk])).content.decode()
    cells = text_of(raw.split('<table class="cc-payload">', 1)[1])
    assert "value 558,378" in cells and "threshold 10,000" in cells


def test_a_budget_alerts_value_is_shown_to_the_cent(admin_client):
    budget = BudgetFactory(name="OpenAI", scope="provider:openai", amount=Decimal("5"))
    alert = fire(
        key=f"budget:{budget.pk}:screens",
        source="budget",
        budget=budget,
        value=Decimal("13.24072134"),
        threshold=Decimal("5"),
        rule=None,
    )
    assert "13.24 USD (limit 5.00 USD)" in text_of(page(admin_client, alert))  # not 13.24072134 USD
