"""The cost dashboard as a finance lead reads it (issue 19): the first screen answers how much, against
what, where it is going and what is wrong; amounts read with their currency and thousands separators;
every chart (the vendored Chart.js, no CDN) has axes with units, gridlines, a legend and tooltips with
the exact amounts of the table beside it, and that table's CSV; long tables wait behind a <details>; every
row drills down to the cost entries it adds up, inside the viewer's team.

The browser tests drive Debian's headless Chromium at 1440x1000 against the live server and save
screenshots to var/test-artefacts/ (COSTCONTROL_TEST_ARTEFACTS); they are skipped, saying why, where
Chromium, its driver or Selenium is missing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from analytics.dashboard import DashboardData
from tests.analytics.conftest import HOUR, T0, Stream, entry, seasonal_entries, write
from tests.analytics.test_dashboard_teams import DASHBOARD, NOW, two_teams  # noqa: F401
from tests.chromium import chromium, missing_browser
from tests.factories import AlertFactory, BatchFactory, BudgetFactory, PriceFactory

VENDOR = Path(settings.BASE_DIR) / "analytics" / "static" / "analytics" / "vendor"
CHARTS = ("spend_by_provider", "top_models", "top_subjects", "cost_per_lead", "gpu")


def staff(username: str, teams: list[Any]) -> Client:
    """A logged-in staff member (not a superuser) with every permission there is, member of `teams`."""
    user = User.objects.create_user(username, password="not-used", is_staff=True)
    user.user_permissions.set(Permission.objects.all())
    for team in teams:
        team.members.add(user)
    client = Client()
    client.force_login(user)
    return client


def superuser() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "not-used"))
    return client


def entries_page(client: Any, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, url
    return response


def listed(response: Any) -> set[int]:
    return {e.pk for e in response.context["cl"].result_list}


def total_shown(response: Any) -> dict[str, Decimal]:
    return {row["currency"]: row["total"] for row in response.context["entry_totals"] or ()}


@pytest.fixture
def big_spender(db):
    """Four weeks of usage well above 1,000 USD a month (thousands separators), 30 finished batches, nine
    open alerts, a budget at risk."""
    PriceFactory(provider="openai", model="gpt-4o", operation="chat")
    PriceFactory(provider="anthropic", model="claude-haiku-4-5", operation="chat")
    streams = [
        Stream("openai", "gpt-4o", "chat", "lead-gen", Decimal("9.00")),
        Stream("anthropic", "claude-haiku-4-5", "chat", "support", Decimal("4.00")),
    ]
    entries = seasonal_entries(streams=streams, days=20)
    for e in entries:
        e.input_tokens = 1_234_567
    entries += [
        entry(T0 - 2 * HOUR, key=f"batch-{i}", amount=Decimal("1.5"), provider="openai", model="gpt-4o",
              service="lead-gen", subject="pipeline")
        for i in range(30)
    ]  # fmt: skip
    for i, e in enumerate(entries[-30:]):
        e.job = f"nightly-{i:02d}"
    with time_machine.travel(NOW, tick=False):
        write(entries)
        for i in range(30):
            BatchFactory(
                name="nightly-leads",
                job=f"nightly-{i:02d}",
                leads=10 + i,
                started_at=T0 - timedelta(days=20) + timedelta(hours=12 * i),
                finished_at=T0 - timedelta(days=20) + timedelta(hours=12 * i + 1),
                cost=Decimal("1.5"),
                cost_per_lead=(Decimal("1.5") / (10 + i)).quantize(Decimal("1E-9")),
                cost_computed_at=T0 - timedelta(days=20) + timedelta(hours=12 * i + 1),
            )
        BudgetFactory(name="Everything monthly", scope="global", amount=Decimal("2000"))
        for i in range(9):
            AlertFactory(key=f"big:{i}", title=f"spend alert {i}", first_fired_at=T0 - i * HOUR,
                         last_fired_at=T0 - i * HOUR)  # fmt: skip


def test_amounts_read_with_their_currency_and_thousands_separators(big_spender):
    client = superuser()
    with time_machine.travel(NOW, tick=False):
        response = client.get(DASHBOARD)
        export = client.get(reverse("admin:analytics_dashboard_export", args=["models"]))
    html = response.content.decode()
    data: DashboardData = response.context["data"]

    month = data.cards[1].value
    assert month > 1000
    assert f'data-card="2">{month.quantize(Decimal("0.01")):,} USD<' in html
    assert re.search(r'id="cc-range-total">[0-9]{1,3}(,[0-9]{3})+\.[0-9]{2} USD<', html)
    # Counts too: 1,234,567 tokens a call.
    tokens = next(r[3] for r in data.top_models.rows if r[0] == "gpt-4o")
    assert f">{tokens:,}<" in html and tokens > 1_000_000
    # The export stays plain for spreadsheets: no separators, no currency.
    exported = b"".join(export.streaming_content)
    assert f"gpt-4o,{data.top_models.rows[0][1]},".encode() in exported
    assert b" USD" not in exported


def test_long_tables_wait_behind_a_details_and_charts_tables_stand_beside_them(big_spender):
    with time_machine.travel(NOW, tick=False):
        response = superuser().get(DASHBOARD)
    html = response.content.decode()
    data: DashboardData = response.context["data"]

    # Nine open alerts: five shown, the others one click away.
    assert len(data.open_alerts.rows) == 9
    alerts = html[html.index('id="t-alerts"') :]
    alerts = alerts[: alerts.index("</section>")]
    assert alerts[: alerts.index("<details")].count("spend alert") == 5
    assert "Show all 9 rows" in alerts
    # Thirty batches: their table is the chart's, in the chart's panel with its CSV, collapsed.
    assert len(data.cost_per_lead.rows) == 30
    panel = html[html.index('id="p-cost_per_lead"') :]
    panel = panel[: panel.index("</section>")]
    assert 'id="chart-cost_per_lead"' in panel and 'id="t-cost_per_lead"' in panel
    assert "export/cost_per_lead.csv" in panel
    assert panel.index("export/cost_per_lead.csv") < panel.index("<summary>Show the 30 rows</summary>")
    assert panel.index("<summary>Show the 30 rows</summary>") < panel.index("nightly-leads</td>")
    for chart in CHARTS:
        assert html.count(f'id="chart-{chart}"') == 1
    # What is wrong comes before the charts.
    assert html.index('id="p-anomalies"') < html.index('id="chart-spend_by_provider"')
    assert html.index('id="p-alerts"') < html.index('id="chart-spend_by_provider"')


def test_the_chart_data_carries_each_amount_as_the_table_shows_it(big_spender):
    with time_machine.travel(NOW, tick=False):
        response = superuser().get(DASHBOARD)
    charts = response.context["charts"]
    data: DashboardData = response.context["data"]

    spend = charts["spend_by_provider"]
    openai = next(d for d in spend["datasets"] if d["label"] == "openai")
    column = data.spend_by_provider.columns.index("openai")
    assert openai["text"] == [data.spend_by_provider.shown_rows[i][column]["text"] for i in range(len(openai["data"]))]
    assert any(re.fullmatch(r"[0-9,]+\.[0-9]{2} USD", t) for t in openai["text"])
    assert spend["totals"] and spend["totals"][-1].endswith(" USD")
    assert spend["axes"] == {"x": "day", "y": "spend (USD)"}
    # A unit cost keeps the places it needs (1.5 / 13 leads = 0.115385 USD).
    per_lead = charts["cost_per_lead"]["datasets"][0]
    assert "0.115385 USD" in per_lead["text"]
    for name in CHARTS:
        assert "USD" in charts[name]["axes"]["x"] + charts[name]["axes"]["y"], name


def test_every_row_drills_down_to_the_entries_it_adds_up(big_spender):
    client = superuser()
    with time_machine.travel(NOW, tick=False):
        data: DashboardData = client.get(DASHBOARD).context["data"]

        # A model's spend over the range: its entries, the same total to the cent.
        model_row = data.top_models.rows.index(next(r for r in data.top_models.rows if r[0] == "gpt-4o"))
        url = data.top_models.links[model_row][1]
        response = entries_page(client, url)
        assert {e.model for e in response.context["cl"].result_list} == {"gpt-4o"}
        assert total_shown(response)["USD"].quantize(Decimal("0.01")) == data.top_models.rows[model_row][1]

        # A day of the stacked chart: the provider's entries of that day, and the day's.
        day = len(data.spend_by_provider.rows) - 2
        column = data.spend_by_provider.columns.index("anthropic")
        response = entries_page(client, data.spend_by_provider.links[day][column])
        assert total_shown(response)["USD"].quantize(Decimal("0.01")) == data.spend_by_provider.rows[day][column]
        assert {e.provider for e in response.context["cl"].result_list} == {"anthropic"}
        query = parse_qs(urlsplit(data.spend_by_provider.links[day][0]).query)
        assert set(query) == {"occurred_at__gte", "occurred_at__lt"}

        # A batch: its job's entries.
        response = entries_page(client, data.cost_per_lead.links[3][2])
        assert {e.job for e in response.context["cl"].result_list} == {data.cost_per_lead.rows[3][2]}

        # A budget: its page, and the entries its spent figure counts.
        budget = data.budgets_at_risk.rows.index(
            next(r for r in data.budgets_at_risk.rows if r[0] == "Everything monthly")
        )
        assert "/admin/budgets/budget/" in data.budgets_at_risk.links[budget][0]
        response = entries_page(client, data.budgets_at_risk.links[budget][2])
        assert total_shown(response)["USD"].quantize(Decimal("0.01")) == data.budgets_at_risk.rows[budget][2]
        assert "/admin/alerts/alert/" in data.open_alerts.links[0][2]

        # And they are on the page.
        html = client.get(DASHBOARD).content.decode()
    assert html.count('href="/admin/tracking/costentry/?') > 60


def test_a_team_members_drill_downs_stay_inside_the_team(two_teams):  # noqa: F811
    alpha_client = staff("alice", [two_teams[0]])
    with time_machine.travel(NOW, tick=False):
        data: DashboardData = alpha_client.get(DASHBOARD).context["data"]
        links = [url for table in (data.top_models, data.top_subjects, data.anomalies, data.cost_per_lead,
                                   data.spend_by_provider, data.budgets_at_risk) for row in table.links
                 for url in row.values() if "/costentry/" in url]  # fmt: skip
        assert len(links) > 30
        for url in links:
            scope = parse_qs(urlsplit(url).query).get("scope", [""])[0]
            assert scope == "team:alpha" or scope.startswith("team:alpha/"), url
        # Followed, a link lists alpha's entries and adds up alpha's figure.
        subject_row = next(i for i, r in enumerate(data.top_subjects.rows) if r[0] == "alpha-whale")
        response = entries_page(alpha_client, data.top_subjects.links[subject_row][0])
        assert {(e.team.name, e.subject) for e in response.context["cl"].result_list} == {("alpha", "alpha-whale")}
        assert total_shown(response)["USD"] == Decimal("40.00")
        # Bravo's copy of the same link, typed by hand, shows nothing of bravo's.
        bravo_url = data.top_subjects.links[subject_row][0].replace("alpha", "bravo")
        response = entries_page(alpha_client, bravo_url)
        assert listed(response) == set() and total_shown(response) == {}
        assert "77.00" not in response.content.decode()


def test_the_vendored_chart_library_says_its_version_licence_and_how_to_refresh_it():
    readme = (VENDOR / "README.md").read_text()
    library = (VENDOR / "chartjs-4.6.1" / "chart.umd.min.js").read_bytes()

    assert "Chart.js v4.6.1" in library[:200].decode()
    assert "npm pack chart.js@4.6.1" in readme
    assert "MIT" in readme and (VENDOR / "chartjs-4.6.1" / "LICENSE.md").read_text().startswith("The MIT License")
    assert hashlib.sha256(library).hexdigest() in readme


# --- in a browser, at 1440x1000 -------------------------------------------------------------------

ARTEFACTS = Path(os.environ.get("COSTCONTROL_TEST_ARTEFACTS") or settings.BASE_DIR / "var" / "test-artefacts")
PASSWORD = "screens-test-password"
WIDTH, HEIGHT = 1440, 1000

needs_browser = pytest.mark.skipif(bool(missing_browser()), reason=missing_browser())

# How many pixels of a canvas are painted (alpha > 0): an empty canvas has none.
PAINTED_PIXELS_JS = """
const canvas = document.getElementById(arguments[0]);
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0;
for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { painted++; } }
return painted;
"""
# The chart's configuration as Chart.js resolved it, and the tooltip of the first point with a value.
CHART_JS = """
const chart = Chart.getChart(document.getElementById(arguments[0]));
if (!chart) { return null; }
const o = chart.options;
const scales = Object.fromEntries(Object.entries(o.scales).map(([k, s]) => [k, {
  title: s.title.display ? s.title.text : '', grid: s.grid.display, tick: s.ticks.callback ? String(s.ticks.callback.call(chart.scales[k], 1234.5, 0, [])) : ''
}]));
let point = null;
chart.data.datasets.forEach((d, di) => d.data.forEach((v, i) => { if (point === null && v !== null && v > 0) point = [di, i]; }));
let lines = [];
if (point !== null) {
  const meta = chart.getDatasetMeta(point[0]).data[point[1]];
  chart.tooltip.setActiveElements([{datasetIndex: point[0], index: point[1]}], {x: meta.x, y: meta.y});
  chart.update();
  lines = chart.tooltip.body.map(b => b.lines).flat().concat(chart.tooltip.footer || []);
  chart.tooltip.setActiveElements([], {x: 0, y: 0});
  chart.update();
}
return {
  legend: o.plugins.legend.display, legendItems: chart.legend.legendItems.map(i => i.text),
  tooltip: o.plugins.tooltip.enabled, scales: scales, point: point, lines: lines,
  expected: point === null ? null : chart.data.datasets[point[0]].label + ': ' + chart.data.datasets[point[0]].text[point[1]],
};
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium(width=WIDTH, height=HEIGHT, exact_viewport=True) as driver:
        yield driver


def screenshot(driver: Any, name: str, *, full: bool = False) -> Path:
    """The viewport (the first screen), or the whole page: in one picture and screen by screen
    (NAME-1.png, NAME-2.png ...: readable at full size)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / name
    if not full:
        driver.save_screenshot(str(path))
        return path
    height = driver.execute_script("return document.documentElement.scrollHeight")

    def capture(top: int, tall: int) -> bytes:
        clip = {"x": 0, "y": top, "width": WIDTH, "height": tall, "scale": 1}
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
        return base64.b64decode(shot["data"])

    path.write_bytes(capture(0, height))
    for number, top in enumerate(range(0, height, HEIGHT), start=1):
        path.with_name(f"{path.stem}-{number}.png").write_bytes(capture(top, min(HEIGHT, height - top)))
    return path


def log_in(driver: Any, live_server: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    get_user_model().objects.create_superuser("screens", "screens@example.com", PASSWORD)
    driver.get(f"{live_server.url}/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys("screens")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "site-name")))


def open_dashboard(driver: Any, live_server: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{live_server.url}{DASHBOARD}")
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, '#chart-gpu[data-rendered="1"]')))


def box(driver: Any, selector: str) -> dict[str, float]:
    return driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {top: r.top, bottom: r.bottom, left: r.left, right: r.right};",
        selector,
    )


@pytest.fixture
def demo(transactional_db):
    """The demo data (8 days), an open alert, and a budget at risk."""
    call_command("seed_demo_data", "--days", "8", "--json", stdout=io.StringIO())
    AlertFactory(key="screens:1", title="Spend of provider:openai above 5 USD today", scope="provider:openai")
    BudgetFactory(name="Tight global", scope="global", amount=Decimal("20"))


@needs_browser
def test_every_chart_is_drawn_with_axes_units_gridlines_a_legend_and_exact_tooltips(demo, live_server, browser):
    log_in(browser, live_server)
    open_dashboard(browser, live_server)

    for name in CHARTS:
        canvas = f"chart-{name}"
        assert browser.execute_script(PAINTED_PIXELS_JS, canvas) > 500, f"{canvas} drew nothing"
        chart = browser.execute_script(CHART_JS, canvas)
        assert chart is not None, f"{canvas}: no Chart.js chart"
        assert chart["legend"] is True and chart["legendItems"], canvas
        assert chart["tooltip"] is not False, canvas
        assert all(s["grid"] for s in chart["scales"].values()), canvas
        assert all(s["title"] for s in chart["scales"].values()), f"{canvas}: an axis without a title"
        # The value axis names its unit and its ticks carry it.
        assert any("USD" in s["title"] and s["tick"] == "1,234.5 USD" for s in chart["scales"].values()), canvas
        # The tooltip says the exact amount, as the table beside the chart does.
        assert chart["point"] is not None, f"{canvas} has no data"
        assert chart["expected"] in chart["lines"], (canvas, chart["lines"])
        assert re.search(r": [0-9,]+\.[0-9]{2,6} USD$", chart["expected"]), chart["expected"]
    screenshot(browser, "dashboard-full.png", full=True)


@needs_browser
def test_the_first_screen_shows_spend_forecast_budgets_and_what_is_wrong(demo, live_server, browser):
    log_in(browser, live_server)
    open_dashboard(browser, live_server)
    height = browser.execute_script("return window.innerHeight")
    width = browser.execute_script("return window.innerWidth")
    assert (width, height) == (WIDTH, HEIGHT)

    for card in ("month", "forecast", "budgets", "alerts", "anomalies", "today", "savings"):
        assert box(browser, f"#cc-card-{card}")["bottom"] <= height, f"the {card} card is below the first screen"
    text = {
        card: browser.find_element("id", f"cc-card-{card}").text for card in ("month", "forecast", "budgets", "alerts")
    }
    assert re.search(r"[0-9,]+\.[0-9]{2} USD", text["month"])
    assert "likely between" in text["forecast"]
    assert "at risk" in text["budgets"] and "Most used" in text["budgets"]
    assert text["alerts"].splitlines()[1] == "1"
    # What needs attention starts on the first screen: budgets at risk and the open alerts.
    assert box(browser, "#p-budgets h2")["top"] < height
    assert box(browser, "#p-alerts h2")["top"] < height
    assert "Spend of provider:openai above 5 USD today" in browser.find_element("id", "p-alerts").text
    # Anomalies are not thousands of pixels down.
    assert box(browser, "#p-anomalies")["top"] < 1.6 * height
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    screenshot(browser, "dashboard-first-screen.png")
