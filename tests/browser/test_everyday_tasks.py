"""The everyday tasks of a finance lead, in a real browser at 1440 x 1000, on the seeded demo site:

1. add an email channel and a budget with thresholds that sends to it, through the admin's forms;
2. the budget alerts (the evaluation beat runs, here called directly) and the alert says who was told;
3. acknowledge it with the button on its own page;
4. "what did we spend yesterday per provider, and which model drove it": the dashboard for yesterday,
   its provider table, then the top model's link to the cost entries, whose total is the model's spend;
5. export a table as CSV.

Each step's screen is checked as the every-screen walk checks screens (no sideways scroll, no console
error, charts drawn, no request to another host) and saved as var/screenshots/task-*.png.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from alerts.evaluation import alerts_evaluate
from alerts.models import Alert
from budgets.models import Budget
from tests.chromium import missing_browser

from .walk import Screen, Walk

if reason := missing_browser():
    pytest.skip(reason, allow_module_level=True)

# Transactional: the evaluation pass runs here, in the test, and the live server (its own connection on
# PostgreSQL) must see the alert it writes; the database is emptied afterwards.
pytestmark = pytest.mark.django_db(transaction=True)


def by_css(walk: Walk, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return walk.driver.find_element(By.CSS_SELECTOR, css)


def submit(walk: Walk, name: str) -> Screen:
    """Save the form on screen and check where it led."""
    from selenium.webdriver.support.ui import WebDriverWait

    before = walk.driver.current_url
    by_css(walk, "input[name=_save]").click()
    WebDriverWait(walk.driver, 30).until(lambda driver: driver.current_url != before)
    return checked(walk, name)


def checked(walk: Walk, name: str) -> Screen:
    screen = Screen(name=name, url=walk.driver.current_url)
    walk.inspect(screen)
    assert not screen.problems, f"{name}: {screen.problems}"
    return screen


def test_a_finance_lead_sets_a_budget_watches_it_alert_acknowledges_and_finds_what_drove_spend(walk: Walk) -> None:
    from selenium.webdriver.support.select import Select

    driver = walk.driver

    # 1. A channel, then a budget that sends to it.
    driver.get(walk.base_url + "/admin/alerts/channel/add/")
    by_css(walk, "#id_name").send_keys("Finance inbox")
    Select(by_css(walk, "#id_kind")).select_by_value("email")
    by_css(walk, "#id_target").send_keys("finance@example.com")
    listed = submit(walk, "task-channel-saved")
    assert "Finance inbox" in listed.text, listed.text[:500]

    driver.get(walk.base_url + "/admin/budgets/budget/add/")
    by_css(walk, "#id_name").send_keys("OpenAI this month")
    by_css(walk, "#id_scope").send_keys("provider:openai")
    by_css(walk, "#id_amount").send_keys("5")
    thresholds = by_css(walk, "#id_thresholds")
    thresholds.clear()
    thresholds.send_keys("50, 80, 100")
    Select(by_css(walk, "#id_channels_from")).select_by_visible_text("Finance inbox (email)")
    by_css(walk, "#id_channels_add, #id_channels_add_link").click()  # the filter widget's "Choose" arrow
    checked(walk, "task-budget-form")
    submit(walk, "task-budget-saved")
    budget = Budget.objects.get(name="OpenAI this month")
    assert (budget.amount, budget.thresholds, [c.name for c in budget.channels.all()]) == (
        Decimal("5"),
        [50, 80, 100],
        ["Finance inbox"],
    )

    # 2. The beat's evaluation pass: the demo's OpenAI spend this month is over 5 USD.
    alerts_evaluate()
    alert = Alert.objects.filter(budget=budget).order_by("-pk").first()
    assert alert is not None, "the budget did not alert"
    driver.get(f"{walk.base_url}/admin/alerts/alert/{alert.pk}/change/")
    page = checked(walk, "task-alert")
    assert "OpenAI this month" in page.text and "Finance inbox" in page.text
    assert "nobody was told" not in page.text

    # 3. Acknowledge with the button on the alert's page.
    by_css(walk, "button[name=_alert][value=acknowledge]").click()
    acknowledged = checked(walk, "task-alert-acknowledged")
    alert.refresh_from_db()
    assert alert.acknowledged_at is not None, acknowledged.text[:800]

    # 4. Yesterday, per provider, and the model that drove it.
    yesterday = (timezone.localdate() - timedelta(days=1)).isoformat()
    driver.get(f"{walk.base_url}/admin/analytics/dashboard/?start={yesterday}&end={yesterday}")
    dashboard = checked(walk, "task-dashboard-yesterday")
    assert f"from {yesterday} to {yesterday}" in dashboard.text and "Spend per day by provider" in dashboard.text
    top_model = by_css(walk, "#t-models tbody tr td a")
    model_name = top_model.text
    model_spend = driver.execute_script(
        "return document.querySelector('#t-models tbody tr').querySelectorAll('td')[1].innerText"
    )
    top_model.click()
    entries = checked(walk, "task-entries-of-the-top-model")
    total = by_css(walk, "#cc-entry-total strong")
    assert model_name in entries.text
    assert total.text == model_spend, (total.text, model_spend)

    # 5. Export the providers' table as CSV (the file a spreadsheet opens).
    driver.get(f"{walk.base_url}/admin/analytics/dashboard/?start={yesterday}&end={yesterday}")
    href = by_css(walk, "#t-spend_by_provider .cc-export a").get_attribute("href")
    csv = driver.execute_script(
        "const r = await fetch(arguments[0]); return [r.status, r.headers.get('content-type'), await r.text()];",
        href,
    )
    assert csv[0] == 200 and csv[1].startswith("text/csv"), csv[:2]
    assert csv[2].splitlines()[0].lower().startswith("day"), csv[2][:200]
    assert yesterday in csv[2]
