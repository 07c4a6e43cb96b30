"""The budget screens a finance lead reads: the burn-down and period history drawn by Chart.js with their
numbers beside them, links to a budget's alerts, cost entries and reservations, a change list that fits
1440 px, scopes chosen from those that exist (a never-seen one confirmed), money to the cent.

The browser tests drive Debian's headless Chromium with Selenium against pytest-django's live server (as
tests/analytics/test_browser.py does) and save screenshots to var/test-artefacts/; they are skipped,
with the reason, where Chromium, its driver or Selenium is missing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from alerts.models import AlertRule
from budgets.models import Budget
from budgets.selectors import budget_statuses
from budgets.services import budget_period_close, budget_period_current, budget_reserve
from tests.chromium import chromium, missing_browser
from tests.factories import AlertFactory, BudgetFactory, PriceFactory, TeamFactory
from tracking.models import Price
from tracking.services import cost_entry_record

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
CHANGELIST = reverse("admin:budgets_budget_changelist")
BUDGET_ADD = reverse("admin:budgets_budget_add")
RULE_ADD = reverse("admin:alerts_alertrule_add")


def change_url(budget: Budget) -> str:
    return reverse("admin:budgets_budget_change", args=[budget.pk])


def chart_data(html: str) -> dict[str, Any]:
    return json.loads(
        re.search(r'<script id="budget-chart-data" type="application/json">(.*?)</script>', html, re.S)[1]
    )


@pytest.fixture
def history(spend):
    """A monthly budget of 2,500 USD on openai with rollover (cap 300): August 40 % spent (nothing
    reached), September 89.3 % (warning), October 103.6 % (exceeded), each closed; November 1,234.50
    spent by the 21st at noon."""
    budget = BudgetFactory(
        name="OpenAI monthly",
        scope="provider:openai",
        amount=Decimal("2500"),
        rollover=True,
        rollover_cap=Decimal("300"),
    )
    for month, amount in ((8, "1000"), (9, "2500"), (10, "2900")):
        with time_machine.travel(datetime(2026, month, 10, tzinfo=UTC), tick=False):
            spend(amount, datetime(2026, month, 10, tzinfo=UTC))
            period = budget_period_current(budget=budget)
        with time_machine.travel(datetime(2026, month + 1, 1, 0, 5, tzinfo=UTC), tick=False):
            budget_period_close(period=period)
    with time_machine.travel(NOW, tick=False):
        spend("1234.50", datetime(2026, 11, 10, tzinfo=UTC))
    return budget


# --- the change page: charts as data, tables beside them ----------------------------------------------


@pytest.mark.django_db
def test_the_burn_down_is_chart_data_for_every_line_a_person_reads_with_exact_amounts(admin_client, history):
    with time_machine.travel(NOW, tick=False):
        html = admin_client.get(change_url(history)).content.decode()
    burn = chart_data(html)["burnDown"]
    series = {s["label"].split(":")[0]: s for s in burn["series"]}

    assert burn["currency"] == "USD" and burn["timeZone"] == settings.TIME_ZONE
    actual = series["spent so far"]["points"]
    assert len(actual) == 22  # the start, then one point a day from the 1st to the 21st
    assert (actual[0]["y"], actual[-1]["text"]) == ("0E-9", "1,234.50 USD")
    assert actual[-1]["x"] == int(NOW.timestamp() * 1000)
    # Even pace: nothing at the start, the limit at the end (October was over: nothing carried).
    pace = series["even pace (the limit spent evenly)"]["points"]
    assert [p["text"] for p in pace] == ["0.00 USD", "2,500.00 USD"]
    # The forecast from now to the period's end, with its interval band.
    forecast = next(s for s in burn["series"] if s["style"] == "forecast")
    assert forecast["points"][0]["text"] == "1,234.50 USD"
    band = next(s for s in burn["series"] if s["style"] == "band-high")
    assert band["label"].startswith("forecast, 90 % interval") and " to " in band["points"][1]["text"]
    # A line per threshold below the limit, named with its level and amount; the limit; now.
    assert "50 % threshold (info)" in series and "80 % threshold (warning)" in series
    assert series["95 % threshold (critical)"]["points"][0]["text"] == "2,375.00 USD"
    assert series["limit"]["label"] == "limit: 2,500.00 USD"
    assert any(s["style"] == "now" and s["points"][0]["x"] == actual[-1]["x"] for s in burn["series"])
    # The time axis ticks at local midnights, from the 1st to the 1st.
    assert burn["ticks"][0]["label"] == "1 Nov" and burn["ticks"][-1]["label"] == "1 Dec"

    # The same numbers in the table beside the chart, and per day below it.
    assert '<th scope="row">spent so far</th><td>1,234.50 USD</td>' in html
    assert '<th scope="row">even pace by now</th><td>1,708.33 USD</td>' in html  # 2,500 x 20.5 / 30 days
    assert '<th scope="row">95 % threshold (critical)</th><td>2,375.00 USD</td>' in html
    assert '<table id="t-burn-down">' in html and "<td>2026-11-11 00:00</td>" in html
    # Drawn by the vendored Chart.js from this server, no hand-drawn SVG left.
    assert "/static/analytics/vendor/chartjs-4.6.1/chart.umd.min.js" in html and "/static/budgets/budget.js" in html
    assert 'class="burn-down"' not in html and "<polyline" not in html


@pytest.mark.django_db
def test_the_history_chart_has_a_bar_per_closed_period_with_its_limit_carry_and_peak_level(admin_client, history):
    with time_machine.travel(NOW, tick=False):
        html = admin_client.get(change_url(history)).content.decode()
    bars = chart_data(html)["history"]

    assert bars["labels"] == ["Aug 2026", "Sep 2026", "Oct 2026"]
    amount, carried, spent = bars["bars"]
    assert [p["text"] for p in amount["points"]] == ["2,500.00 USD"] * 3
    # August carried nothing in; September 300 (1,500 unspent, capped), October 300 (the same).
    assert [p["text"] for p in carried["points"]] == ["0.00 USD", "300.00 USD", "300.00 USD"]
    assert spent["points"][2]["text"] == "2,900.00 USD (103.6 % of 2,800.00 USD; peak level exceeded)"
    assert spent["colours"][0] != spent["colours"][2]  # coloured by peak level
    assert [level["label"] for level in bars["levels"]] == [
        "peak level ok",
        "peak level warning",
        "peak level exceeded",
    ]
    # Every period's numbers in the table under the chart, the open one first.
    table = html[html.index('<table id="t-period-history">') :]
    assert "2026-11-01 - 2026-11-30 (open)" in table and "1,234.50 USD so far" in table
    assert "2026-10-01 - 2026-10-31" in table and "2,800.00 USD" in table and "103.6 %" in table


@pytest.mark.django_db
def test_a_lifetime_an_inactive_and_a_zero_budget_say_what_they_have_instead_of_a_chart(admin_client, spend):
    lifetime = BudgetFactory(name="Lifetime", period="none", amount=Decimal("1000"))
    inactive = BudgetFactory(name="Paused", is_active=False)
    zero = BudgetFactory(name="Zero", amount=Decimal("0"))
    with time_machine.travel(NOW, tick=False):
        spend("3", datetime(2026, 11, 20, tzinfo=UTC))
        pages = {b.name: admin_client.get(change_url(b)) for b in (lifetime, inactive, zero)}
    assert all(page.status_code == 200 for page in pages.values())
    assert "No burn-down for a lifetime budget" in pages["Lifetime"].content.decode()
    assert "(lifetime)" in pages["Lifetime"].content.decode()
    assert "Inactive: not checked" in pages["Paused"].content.decode()
    zero_chart = chart_data(pages["Zero"].content.decode())["burnDown"]
    assert zero_chart["series"][0]["points"][-1]["text"] == "3.00 USD"


# --- links from a budget to what is about it ----------------------------------------------------------


@pytest.mark.django_db
def test_a_budget_links_to_its_alerts_its_cost_entries_this_period_and_its_reservations(admin_client, spend):
    budget = BudgetFactory(name="Image API", scope="service:image-api", amount=Decimal("100"), hard_limit=True)
    other = BudgetFactory(name="Other", scope="service:other", amount=Decimal("100"))
    with time_machine.travel(NOW, tick=False):
        ours = [
            spend("3.25", datetime(2026, 11, 2, tzinfo=UTC), service="image-api"),
            spend("1.75", datetime(2026, 11, 20, tzinfo=UTC), service="image-api"),
        ]
        spend("9", datetime(2026, 10, 31, 23, tzinfo=UTC), service="image-api")  # the period before
        spend("7", datetime(2026, 11, 5, tzinfo=UTC), service="other")
        AlertFactory(key="ours", source="budget", budget=budget)
        AlertFactory(key="theirs", source="budget", budget=other)
        budget_reserve(scopes=["service:image-api"], amount="2")
        budget_reserve(scopes=["service:other"], amount="2")  # not a hard limit: nothing held
        page = admin_client.get(change_url(budget)).content.decode()
        links = dict(
            (text, url.replace("&amp;", "&"))
            for url, text in re.findall(r'<li><a href="([^"]+)">([^<]+)</a></li>', page)
        )
        alerts = admin_client.get(links["Its alerts (1)"])
        entries = admin_client.get(links["Its cost entries this period"])
        reservations = admin_client.get(links["Its reservations (1)"])

    assert [a.key for a in alerts.context["cl"].result_list] == ["ours"]
    assert sorted(e.pk for e in entries.context["cl"].result_list) == sorted(e.pk for e in ours)
    [status] = budget_statuses([budget], at=NOW)
    assert sum(e.amount for e in entries.context["cl"].result_list) == status.spent == Decimal("5")
    assert [r.budget_id for r in reservations.context["cl"].result_list] == [budget.pk]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("scope", "fields"),
    [
        ("tag:env=prod", {"tags": {"env": "prod"}}),
        ("team:ml/model:gpt-4o", {"team": "ml"}),
        ("global", {}),
    ],
)
def test_the_cost_entry_link_shows_the_entries_of_a_tag_or_a_teams_scope(admin_client, spend, scope, fields):
    TeamFactory(name="ml")
    budget = BudgetFactory(scope=scope)
    with time_machine.travel(NOW, tick=False):
        counted = spend("2", datetime(2026, 11, 3, tzinfo=UTC), **fields)
        spend("5", datetime(2026, 11, 3, tzinfo=UTC), currency="EUR", **fields)  # another currency
        if fields:
            spend("4", datetime(2026, 11, 4, tzinfo=UTC))  # neither the tag nor the team
        page = admin_client.get(change_url(budget)).content.decode()
        url = re.search(r'<a href="([^"]+)">Its cost entries this period</a>', page)[1].replace("&amp;", "&")
        listed = admin_client.get(url).context["cl"].result_list
    assert [e.pk for e in listed] == [counted.pk]


# --- the change list at 1440 px ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_change_list_says_scope_period_hard_limit_and_what_is_left_without_columns_of_their_own(
    admin_client, history, spend
):
    BudgetFactory(name="Batch", scope="job:batch-123", amount=Decimal("10"), hard_limit=True)
    BudgetFactory(name="Paused", scope="service:paused", is_active=False)
    with time_machine.travel(NOW, tick=False):
        spend("12", datetime(2026, 11, 17, 9, tzinfo=UTC), job="batch-123")
        response = admin_client.get(CHANGELIST)
    html = response.content.decode()
    columns = list(response.context["cl"].list_display)
    assert "forecast_shown" in columns and "days_left_shown" in columns
    assert not {"scope", "period", "hard_limit", "is_active", "remaining_shown"} & set(columns)
    assert 'Batch<span class="cc-note"><span class="cc-scope">job:batch-123</span> · monthly, hard limit</span>' in html
    assert 'Paused<span class="cc-note"><span class="cc-scope">service:paused</span> · monthly, inactive</span>' in html
    # OpenAI: 1,234.50 + the batch's 12 (an openai call too) of 2,500.
    assert "2,500.00 USD" in html and "1,246.50 USD" in html and "1,253.50 USD left" in html
    assert "2.00 USD over" in html  # Batch: 12 of 10
    assert "carried" not in html  # October was over its limit: nothing carried into November
    assert "/static/budgets/budget.css" in html


# --- scopes: chosen, a never-seen one confirmed -----------------------------------------------------


def anthropic(at: datetime) -> None:
    """A call to Anthropic's claude (a chat), so that provider:anthropic and model:claude have spend."""
    if not Price.objects.filter(provider="anthropic").exists():
        PriceFactory(provider="anthropic", model="claude", unit_price=Decimal("0.000003"))
    cost_entry_record(
        provider="anthropic",
        model="claude",
        operation="chat",
        amount="1",
        occurred_at=at,
        idempotency_key=f"anthropic-{at.isoformat()}",
    )


def budget_form(**fields: str) -> dict[str, str]:
    return {
        "name": "Anthropic",
        "scope": "provider:antropic",
        "amount": "50",
        "currency": "USD",
        "period": "monthly",
        "thresholds": "50, 80, 100",
        "metadata": "{}",
        "is_active": "on",
        **fields,
    }


RULE_FORM = {
    "name": "anthropic daily",
    "is_enabled": "on",
    "metric": "spend",
    "scope": "provider:antropic",
    "window": "day",
    "threshold": "10",
    "level": "warning",
    "cooldown": "01:00:00",
}


@pytest.mark.django_db
def test_the_budget_and_rule_forms_suggest_the_scopes_with_spend(admin_client, spend):
    anthropic(datetime.now(UTC) - timedelta(hours=2))
    for url in (BUDGET_ADD, RULE_ADD):
        html = admin_client.get(url).content.decode()
        options = re.findall(r'<option value="([^"]+)">', html[html.index('id="id_scope-suggestions"') :])
        assert {"global", "provider:anthropic", "model:claude"} <= set(options), url
        assert not any(o.startswith("operation:") for o in options), "budgets and rules cannot watch operations"
        assert 'list="id_scope-suggestions"' in html and "/static/budgets/scope.js" in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("add", "form", "model"),
    [(BUDGET_ADD, budget_form(), Budget), (RULE_ADD, RULE_FORM, AlertRule)],
    ids=["budget", "rule"],
)
def test_a_never_seen_scope_is_saved_only_once_confirmed(admin_client, spend, add, form, model):
    anthropic(datetime.now(UTC) - timedelta(hours=2))

    first = admin_client.post(add, form)
    assert first.status_code == 200 and not model.objects.exists()
    [message] = first.context["adminform"].form.errors["scope"]
    assert "No spend has ever been recorded for provider:antropic" in message
    assert "Did you mean provider:anthropic?" in message
    html = first.content.decode()
    assert 'type="checkbox" name="confirm_scope"' in html and "Save with this scope anyway" in html

    confirmed = admin_client.post(add, {**form, "confirm_scope": "on"})
    assert confirmed.status_code == 302 and model.objects.get().scope == "provider:antropic"


@pytest.mark.django_db
def test_a_scope_with_spend_saves_at_once_and_an_unchanged_scope_is_not_asked_again(admin_client, spend):
    anthropic(datetime.now(UTC) - timedelta(days=60))  # seen long ago
    assert 'name="confirm_scope"' in admin_client.get(BUDGET_ADD).content.decode()  # there, hidden
    assert 'type="checkbox" name="confirm_scope"' not in admin_client.get(BUDGET_ADD).content.decode()

    assert admin_client.post(BUDGET_ADD, budget_form(scope="provider:anthropic")).status_code == 302
    typo = BudgetFactory(name="Typo kept", scope="provider:antropic")
    edited = admin_client.post(change_url(typo), budget_form(name="Typo, renamed"))
    assert edited.status_code == 302, edited.context["adminform"].form.errors
    assert Budget.objects.get(pk=typo.pk).name == "Typo, renamed"


@pytest.mark.django_db
def test_a_team_member_is_asked_about_a_scope_only_another_team_spent_on_and_told_nothing_of_it(spend):
    """Whether a scope has spend, and what it might have meant, is answered from the scopes the user
    may read: another team's spend on the same service tells them nothing."""
    alpha, _ = TeamFactory(name="alpha"), TeamFactory(name="bravo")
    now = datetime.now(UTC) - timedelta(hours=2)
    spend("1", now, service="shared", team="bravo")
    spend("1", now, service="alpha-svc", team="alpha")
    user = User.objects.create_user("alice", password="not-used", is_staff=True)
    user.user_permissions.set(Permission.objects.all())
    alpha.members.add(user)
    alice = Client()
    alice.force_login(user)
    form = budget_form(team=str(alpha.pk))

    asked = alice.post(BUDGET_ADD, {**form, "scope": "team:alpha/service:shared"})
    [message] = asked.context["adminform"].form.errors["scope"]
    assert "No spend has ever been recorded" in message and "bravo" not in asked.content.decode()
    assert alice.post(BUDGET_ADD, {**form, "scope": "team:alpha/service:alpha-svc"}).status_code == 302


# --- money and words ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_reservations_show_small_amounts_to_the_place_they_need_and_no_more(admin_client):
    budget = BudgetFactory(scope="service:image-api", hard_limit=True)
    budget_reserve(scopes=[budget.scope], amount="0.0042")
    budget_reserve(scopes=[budget.scope], amount="12.345678912")
    html = admin_client.get(reverse("admin:budgets_reservation_changelist")).content.decode()
    assert "0.0042 USD" in html and "12.345679 USD" in html and "12.345678912" not in html


@pytest.mark.django_db
def test_the_budget_form_explains_fields_in_the_words_of_the_person_using_it(admin_client):
    html = admin_client.get(BUDGET_ADD).content.decode()
    assert 'name="thresholds" value="50, 80, 95, 100"' in html  # the defaults, not an empty required box
    assert "Refuse spending that would go over the limit" in html
    assert "it stays in the list" in html
    assert "ISO 4217" not in html


# --- in a real browser at 1440 x 1000 -----------------------------------------------------------------

ARTEFACTS = Path(os.environ.get("COSTCONTROL_TEST_ARTEFACTS") or settings.BASE_DIR / "var" / "test-artefacts")
PASSWORD = "browser-test-password"

PAINTED_PIXELS_JS = """
const canvas = document.getElementById(arguments[0]);
if (!canvas) { return -1; }
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0;
for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { painted++; } }
return painted;
"""
# The chart's dataset labels, legend items and the tooltip's lines for one point, by Chart.js's API.
CHART_JS = """
const chart = Chart.getChart(document.getElementById(arguments[0]));
if (!chart) { return null; }
const [dataset, index] = arguments[1];
const meta = chart.getDatasetMeta(dataset);
const point = meta.data[index];
chart.tooltip.setActiveElements([{datasetIndex: dataset, index: index}], {x: point.x, y: point.y});
chart.update();
return {
  labels: chart.data.datasets.map(d => d.label),
  legend: chart.options.plugins.legend.display !== false ? chart.legend.legendItems.map(i => i.text) : [],
  tooltipTitle: chart.tooltip.title,
  tooltip: chart.tooltip.body.map(b => b.lines.join(' ')),
  xTitle: chart.options.scales.x.title.text,
  yTitle: chart.options.scales.y.title.text,
  yTicks: chart.scales.y.ticks.map(t => t.label),
  grid: chart.options.scales.y.grid.display !== false,
};
"""
NO_SIDEWAYS_SCROLL_JS = """
const results = document.querySelector('#changelist .results') || document.querySelector('#result_list');
const headers = Array.from(document.querySelectorAll('#result_list thead th')).map(th => th.getBoundingClientRect().right);
return {
  page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  results: results.scrollWidth - results.clientWidth,
  rightmost: Math.max(...headers),
  width: window.innerWidth,
  headerLines: Array.from(document.querySelectorAll('#result_list thead th .text')).map(t => {
    const lines = new Set();
    const walker = document.createTreeWalker(t, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const range = document.createRange();
      range.selectNodeContents(walker.currentNode);
      Array.from(range.getClientRects()).forEach(r => lines.add(Math.round(r.top)));
    }
    return lines.size;
  }),
};
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    if reason := missing_browser():
        pytest.skip(reason)
    with chromium() as driver:
        yield driver


def screenshot(driver: Any, name: str, *, full: bool = False) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / name
    if full:  # the whole page at 1440 px wide
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1440, max(1000, height))
        driver.save_screenshot(str(path))
        driver.set_window_size(1440, 1000)
    else:
        driver.save_screenshot(str(path))
    return path


def log_in(driver: Any, live_server: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    get_user_model().objects.create_superuser("browser", "browser@example.com", PASSWORD)
    driver.get(f"{live_server.url}/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys("browser")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "site-name")))


def browser_history(spend: Any) -> Budget:
    """A monthly budget with three closed months and spend this month, in real time (the live server's)."""
    now = datetime.now(UTC)
    budget = BudgetFactory(
        name="OpenAI production monthly: chat, embeddings and batch jobs",
        scope="provider:openai",
        amount=Decimal("2500"),
        rollover=True,
        rollover_cap=Decimal("300"),
        thresholds=[50, 80, 95, 100],
    )
    this_month = budget_statuses([budget], at=now)[0].period.start
    starts = []
    start = this_month
    for _ in range(3):
        start = (start - timedelta(days=1)).replace(day=1)
        starts.append(start)
    for start, amount in zip(reversed(starts), ("1000", "2500", "2900"), strict=True):
        spend(amount, start + timedelta(days=9))
        period = budget_period_current(budget=budget, at=start + timedelta(days=9))
        budget_period_close(period=period, now=now)
    days = max(1, (now - this_month).days)
    for day in range(days + 1):
        moment = this_month + timedelta(days=day, hours=10)
        if moment < now:
            spend(Decimal("61.25") + day, moment)
    return budget


def test_the_budget_page_draws_its_burn_down_and_history_with_chart_js_in_chromium(
    transactional_db, live_server, browser, spend
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    budget = browser_history(spend)
    log_in(browser, live_server)
    browser.get(f"{live_server.url}{change_url(budget)}")
    for canvas in ("budget-burn-down", "budget-history"):
        WebDriverWait(browser, 30).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, f'#{canvas}[data-rendered="1"]'))
        )
        assert browser.execute_script(PAINTED_PIXELS_JS, canvas) > 5000, f"{canvas} drew nothing"

    burn = browser.execute_script(CHART_JS, "budget-burn-down", [0, 1])
    assert burn["labels"][:2] == ["spent so far", "even pace (the limit spent evenly)"]
    assert any(label.startswith("forecast (") for label in burn["labels"])
    assert any(item.startswith("forecast, 90 % interval") for item in burn["legend"])
    assert not any("(low)" in item for item in burn["legend"])
    assert {"50 % threshold (info): 1,250.00 USD", "80 % threshold (warning): 2,000.00 USD"} <= set(burn["legend"])
    assert any(item.startswith("limit: 2,500.00 USD") for item in burn["legend"])
    assert any(item.startswith("now (") for item in burn["legend"])
    assert burn["tooltip"] == ["spent so far: 61.25 USD"] and re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d", burn["tooltipTitle"][0]
    )
    assert burn["xTitle"].startswith("date (") and burn["yTitle"] == "spent this period (USD)"
    assert any("," in tick for tick in burn["yTicks"]) and all(t.endswith(" USD") for t in burn["yTicks"])
    assert burn["grid"]

    bars = browser.execute_script(CHART_JS, "budget-history", [2, 2])
    assert bars["labels"] == ["budget amount", "carried over", "spent (colour: peak level)"]
    assert "peak level exceeded" in bars["legend"]
    assert bars["tooltip"] == ["spent: 2,900.00 USD (103.6 % of 2,800.00 USD; peak level exceeded)"]
    # Each chart has its table beside or below it.
    assert browser.find_elements(By.CSS_SELECTOR, "#t-this-period tbody tr")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#t-period-history tbody tr")) == 4
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "budget-change.png")
    screenshot(browser, "budget-change-full.png", full=True)
    history_top = browser.execute_script("return document.getElementById('period-history').offsetTop")
    browser.execute_script(f"window.scrollTo(0, {history_top})")
    screenshot(browser, "budget-history.png")


def test_the_budget_change_list_fits_1440_pixels_without_scrolling_sideways(
    transactional_db, live_server, browser, spend
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser_history(spend)
    team = TeamFactory(name="machine-learning-platform")
    for i, (scope, amount) in enumerate(
        [
            ("service:customer-support-summariser", "400"),
            ("team:machine-learning-platform/model:gpt-4o-2024-08-06", "12000"),
            ("tag:cost_centre=research-and-development", "900"),
            ("job:nightly-lead-enrichment-2026", "35"),
            ("global", "250000"),
        ]
    ):
        BudgetFactory(
            name=f"Budget {i}: a name long enough to need two lines in the list",
            scope=scope,
            amount=Decimal(amount),
            hard_limit=i % 2 == 0,
            forecast_alerts=True,
            team=team if scope.startswith("team:") else None,
        )
    spend("330", datetime.now(UTC) - timedelta(hours=1), service="customer-support-summariser")
    log_in(browser, live_server)
    browser.get(f"{live_server.url}{CHANGELIST}")
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result_list")))

    screenshot(browser, "budget-changelist.png")
    fit = browser.execute_script(NO_SIDEWAYS_SCROLL_JS)
    assert fit["page"] <= 0 and fit["results"] <= 0, fit
    assert fit["rightmost"] <= fit["width"], fit
    headers = [th.text.replace("\n", " ") for th in browser.find_elements(By.CSS_SELECTOR, "#result_list thead th")]
    assert "forecast at period end" in [h.lower() for h in headers] and "days left" in [h.lower() for h in headers]
    assert max(fit["headerLines"]) <= 2, fit
    screenshot(browser, "budget-changelist.png")


def test_a_typed_scope_with_no_spend_is_flagged_in_the_form_and_confirmed_on_save(
    transactional_db, live_server, browser, spend
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    anthropic(datetime.now(UTC) - timedelta(hours=2))
    log_in(browser, live_server)
    # The rule form's scope field suggests and flags the same way.
    browser.get(f"{live_server.url}{RULE_ADD}")
    browser.find_element(By.ID, "id_scope").clear()
    browser.find_element(By.ID, "id_scope").send_keys("provider:antropic")
    assert browser.find_element(By.CSS_SELECTOR, ".cc-scope-note").is_displayed()
    screenshot(browser, "alertrule-scope-note.png")

    browser.get(f"{live_server.url}{BUDGET_ADD}")
    scope = browser.find_element(By.ID, "id_scope")
    note = browser.find_element(By.CSS_SELECTOR, ".cc-scope-note")
    assert not note.is_displayed()
    scope.send_keys("provider:antropic")
    assert note.is_displayed()
    scope.clear()
    scope.send_keys("provider:anthropic")
    assert not note.is_displayed()
    scope.clear()
    scope.send_keys("provider:antropic")
    browser.find_element(By.ID, "id_name").send_keys("Anthropic monthly")
    browser.find_element(By.ID, "id_amount").send_keys("50")
    browser.find_element(By.NAME, "_save").click()
    confirm = WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "id_confirm_scope")))
    assert "Did you mean provider:anthropic?" in browser.find_element(By.CSS_SELECTOR, ".field-scope .errorlist").text
    screenshot(browser, "budget-scope-warning.png")
    confirm.click()
    browser.find_element(By.NAME, "_save").click()
    screenshot(browser, "budget-scope-confirmed.png")
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result_list")))
    assert Budget.objects.get().scope == "provider:antropic"
