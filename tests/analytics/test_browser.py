"""The dashboard and a budget in a real browser: Debian's headless Chromium driven by Selenium
against pytest-django's live server (which serves our static files, Chart.js included).

Screenshots go to var/test-artefacts/ (COSTCONTROL_TEST_ARTEFACTS overrides it; git ignores var/).
Skipped, with the reason, where Chromium, its driver or Selenium is missing (CI installs the
chromium and chromium-driver packages with apt); no browser is ever downloaded.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from budgets.models import Budget
from tests.chromium import chromium, missing_browser

ARTEFACTS = Path(os.environ.get("COSTCONTROL_TEST_ARTEFACTS") or settings.BASE_DIR / "var" / "test-artefacts")

if reason := missing_browser():
    pytest.skip(reason, allow_module_level=True)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

PASSWORD = "browser-test-password"

# How many pixels of a canvas are painted (alpha > 0): an empty canvas has none.
PAINTED_PIXELS_JS = """
const canvas = document.getElementById(arguments[0]);
if (!canvas) { return -1; }
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0;
for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { painted++; } }
return painted;
"""
CHART_POINTS_JS = """
const chart = (window.costcontrolCharts || {})[arguments[0]];
if (!chart) { return -1; }
return chart.data.datasets.reduce((n, d) => n + d.data.filter(v => v !== null && v > 0).length, 0);
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium(width=1400, height=2200) as driver:
        yield driver


def screenshot(driver: Any, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / name
    driver.save_screenshot(str(path))
    return path


def card(driver: Any, number: int) -> Decimal:
    return Decimal(driver.find_element(By.CSS_SELECTOR, f'[data-card="{number}"]').text.split()[0])


def wait_for_charts(driver: Any) -> None:
    WebDriverWait(driver, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, '#chart-spend_by_provider[data-rendered="1"]'))
    )


def test_the_dashboard_and_a_budget_render_their_charts_in_chromium(transactional_db, live_server, browser):
    call_command("seed_demo_data", "--days", "8", "--json", stdout=io.StringIO())
    get_user_model().objects.create_superuser("browser", "browser@example.com", PASSWORD)
    budget = Budget.objects.get(name="Demo: OpenAI monthly")

    # Log in to the admin; the dashboard is linked from its index.
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("browser")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "site-name")))
    browser.find_element(By.CSS_SELECTOR, 'a[href="/admin/analytics/dashboard/"]').click()
    wait_for_charts(browser)

    for chart in (
        "chart-spend_by_provider",
        "chart-top_models",
        "chart-top_subjects",
        "chart-gpu",
        "chart-cost_per_lead",
    ):
        assert browser.execute_script(CHART_POINTS_JS, chart) > 0, f"{chart} has no data"
        assert browser.execute_script(PAINTED_PIXELS_JS, chart) > 500, f"{chart} drew nothing"
    # An accessible table stands beside the stacked chart.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#t-spend_by_provider tbody tr")) >= 8
    month_all = card(browser, 2)
    assert month_all > 0
    screenshot(browser, "dashboard.png")

    # A filter changes the numbers.
    Select(browser.find_element(By.NAME, "provider")).select_by_value("openai")
    browser.find_element(By.ID, "cc-apply").click()
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.ID, "cc-scope"), "provider:openai"))
    wait_for_charts(browser)
    month_openai = card(browser, 2)
    assert Decimal(0) < month_openai < month_all
    assert browser.execute_script(PAINTED_PIXELS_JS, "chart-spend_by_provider") > 500
    screenshot(browser, "dashboard-openai.png")

    # The budget's change page draws its burn-down with Chart.js too (tests/budgets/test_budget_screens.py
    # looks at it closely).
    browser.get(f"{live_server.url}/admin/budgets/budget/{budget.pk}/change/")
    WebDriverWait(browser, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, '#budget-burn-down[data-rendered="1"]'))
    )
    assert browser.execute_script(PAINTED_PIXELS_JS, "budget-burn-down") > 500
    path = screenshot(browser, "budget.png")
    assert path.stat().st_size > 10_000
