"""The cost entry list and pages as a finance lead uses them (issue 19): filters for model, service, job and
"yesterday"; the total of the filtered rows above the list; parameters other pages link to (a budget's
scope and period, an alert's scope and window, a batch's job), inside the viewer's team; the important
columns visible at 1440 px without scrolling sideways; amounts with their currency, counts with
thousands separators, words instead of codes, prices per 1M tokens, the prices used as a table.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.chromium import chromium, missing_browser
from tests.factories import BatchFactory, PriceFactory, TeamFactory
from tracking.models import CostEntry
from tracking.rollups import entry_scopes
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db

LIST = "/admin/tracking/costentry/"
# Wednesday noon, UTC (TIME_ZONE is UTC in the tests): yesterday is Tuesday 2026-03-17.
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)


def record(**event: Any) -> CostEntry:
    event.setdefault("occurred_at", NOW - timedelta(hours=1))
    event.setdefault("idempotency_key", f"screens:{CostEntry.objects.count()}")
    return cost_entry_record(**event).entry


@pytest.fixture
def ledger(db):
    """Entries of two teams, several models, services, jobs, tags, days and currencies."""
    for provider, model in (("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5")):
        PriceFactory(provider=provider, model=model, operation="chat")
    PriceFactory(provider="gpu", model="NVIDIA L4", operation="gpu_idle", unit="gpu_hour")
    TeamFactory(name="alpha")
    TeamFactory(name="bravo")
    yesterday = NOW - timedelta(days=1)
    with time_machine.travel(NOW, tick=False):
        entries = {
            "today": record(provider="openai", model="gpt-4o", service="support", amount="1.10", team="alpha",
                            subject="cust-1", tags={"env": "prod"}),
            "yesterday": record(provider="openai", model="gpt-4o", service="support", amount="2.20", team="alpha",
                                occurred_at=yesterday, job="nightly-1"),
            "yesterday_late": record(provider="anthropic", model="claude-haiku-4-5", service="search",
                                     amount="1000.005", team="alpha", occurred_at=yesterday.replace(hour=23, minute=59)),
            "old": record(provider="openai", model="gpt-4o-mini", service="search", amount="4.40", team="bravo",
                          occurred_at=NOW - timedelta(days=3), job="bravo-job", subject="bravo-whale"),
            "euro": record(provider="openai", model="gpt-4o", service="support", amount="5.50", currency="EUR",
                           occurred_at=yesterday, tags={"env": "dev"}),
            "gpu": record(provider="gpu", model="NVIDIA L4", operation="gpu_idle", amount="0.25", occurred_at=yesterday),
        }  # fmt: skip
    return entries


@pytest.fixture
def root(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "not-used"))
    return client


def staff(name: str, team: str) -> Client:
    user = User.objects.create_user(name, password="not-used", is_staff=True)
    user.user_permissions.set(Permission.objects.all())
    TeamFactory(name=team).members.add(user)
    client = Client()
    client.force_login(user)
    return client


def get_list(client: Client, **params: str) -> Any:
    with time_machine.travel(NOW, tick=False):
        response = client.get(LIST, params)
    assert response.status_code == 200, response.content.decode()[:2000]
    return response


def shown(response: Any) -> set[int]:
    return {e.pk for e in response.context["cl"].result_list}


def totals(response: Any) -> dict[str, Decimal]:
    return {row["currency"]: row["total"] for row in response.context["entry_totals"]}


def pks(ledger: dict[str, CostEntry], *names: str) -> set[int]:
    return {ledger[name].pk for name in names}


def test_the_model_service_and_job_filters_offer_what_spent_and_filter(root, ledger):
    response = get_list(root)
    html = response.content.decode()
    for value in ("gpt-4o-mini", "claude-haiku-4-5", "support", "search", "nightly-1"):
        assert f"?{urlencode({value_param(value): value})}" in html, value

    assert shown(get_list(root, model="gpt-4o")) == pks(ledger, "today", "yesterday", "euro")
    assert shown(get_list(root, service="search")) == pks(ledger, "yesterday_late", "old")
    assert shown(get_list(root, job="nightly-1")) == pks(ledger, "yesterday")
    assert shown(get_list(root, model="gpt-4o", service="support", job="nightly-1")) == pks(ledger, "yesterday")


def value_param(value: str) -> str:
    return {"gpt-4o-mini": "model", "claude-haiku-4-5": "model", "nightly-1": "job"}.get(value, "service")


def test_yesterday_is_one_click_and_a_local_day(root, ledger):
    html = get_list(root).content.decode()
    link = re.search(r'<a href="(\?[^"]*)">Yesterday</a>', html)
    assert link, "no Yesterday filter"

    with time_machine.travel(NOW, tick=False):
        response = root.get(LIST + link.group(1).replace("&amp;", "&"))
    assert shown(response) == pks(ledger, "yesterday", "yesterday_late", "euro", "gpu")
    assert 'class="selected"' in response.content.decode().split(">Yesterday<")[0][-200:]


def test_the_total_of_the_filtered_rows_is_shown_per_currency_above_the_list(root, ledger):
    with CaptureQueriesContext(connection) as queries:
        response = get_list(root, occurred_at__gte="2026-03-17", occurred_at__lt="2026-03-18")
    html = response.content.decode()

    assert totals(response) == {"USD": Decimal("1002.455"), "EUR": Decimal("5.50")}
    assert all(isinstance(value, Decimal) for value in totals(response).values())
    total = html[html.index('id="cc-entry-total"') :]
    total = total[: total.index("</p>")]
    assert "1,002.46 USD" in total and "5.50 EUR" in total and "(3 entries)" in total and "(1 entry)" in total
    assert html.index('id="cc-entry-total"') < html.index('id="result_list"')
    # One aggregate statement for the total, whatever the number of rows.
    assert sum("SUM(" in q["sql"].upper() for q in queries.captured_queries) == 1


def test_the_whole_unfiltered_ledger_is_not_summed_on_each_page_load(root, ledger):
    with CaptureQueriesContext(connection) as queries:
        response = get_list(root)

    assert response.context["entry_totals"] is None
    assert "Choose a filter" in response.content.decode()
    assert not any("SUM(" in q["sql"].upper() for q in queries.captured_queries)


def test_a_scope_parameter_lists_exactly_the_entries_its_rollup_counts(root, ledger):
    from tracking.admin import entry_scope_q

    every = list(CostEntry.objects.select_related("team"))
    scopes = {scope for e in every for scope in entry_scopes(e)}
    assert {"team:alpha/service:support", "tag:env=prod", "operation:gpu_idle", "job:nightly-1"} <= scopes
    for scope in sorted(scopes):
        expected = {e.pk for e in every if scope in entry_scopes(e)}
        assert set(CostEntry.objects.filter(entry_scope_q(scope)).values_list("pk", flat=True)) == expected, scope
    # Through the list's URL, with a window: a budget's scope and period.
    response = get_list(
        root, scope="team:alpha", occurred_at__gte="2026-03-17T00:00:00+00:00", occurred_at__lt="2026-03-18T00:00:00Z"
    )
    assert shown(response) == pks(ledger, "yesterday", "yesterday_late")
    assert totals(response) == {"USD": Decimal("1002.205")}
    assert shown(get_list(root, scope="tag:env=prod")) == pks(ledger, "today")
    # A budget counts the entries of its own currency.
    response = get_list(root, scope="provider:openai", currency="EUR")
    assert shown(response) == pks(ledger, "euro") and totals(response) == {"EUR": Decimal("5.50")}
    assert shown(get_list(root, scope="operation:gpu_idle")) == pks(ledger, "gpu")


def test_an_unencoded_offset_in_a_link_still_reads_as_the_same_moment(root, ledger):
    with time_machine.travel(NOW, tick=False):
        response = root.get(
            f"{LIST}?occurred_at__gte=2026-03-17T00:00:00+00:00&occurred_at__lt=2026-03-18T00:00:00+00:00"
        )
    assert shown(response) == pks(ledger, "yesterday", "yesterday_late", "euro", "gpu")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"scope": "provider"}, "scope: scope 'provider' needs a value"),
        ({"scope": "colour:blue"}, "scope: unknown scope kind 'colour'"),
        ({"occurred_at__gte": "yesterday"}, "occurred_at__gte: 'yesterday' is not a date"),
        ({"occurred_at__lt": "2026-02-30"}, "occurred_at__lt: '2026-02-30' is not a date"),
    ],
)
def test_a_bad_parameter_is_refused_naming_it(root, ledger, params, named):
    with time_machine.travel(NOW, tick=False):
        response = root.get(LIST, params)

    assert response.status_code == 400
    assert named in unescape(response.content.decode())


def test_a_team_member_filters_and_totals_only_their_teams_entries(ledger):
    alice = staff("alice", "alpha")

    everything = get_list(alice, occurred_at__gte="2026-03-01")
    assert shown(everything) == pks(ledger, "today", "yesterday", "yesterday_late")
    assert totals(everything) == {"USD": Decimal("1003.305")}
    # Another team's scope, job or model: nothing of it, not even a total.
    for params in ({"scope": "team:bravo"}, {"job": "bravo-job"}, {"scope": "subject:bravo-whale"},
                   {"model": "gpt-4o-mini"}, {"scope": "global"}):  # fmt: skip
        response = get_list(alice, **params)
        assert "4.40" not in response.content.decode(), params
        assert shown(response) <= pks(ledger, "today", "yesterday", "yesterday_late"), params
    # The filters offer alpha's values only.
    html = get_list(alice).content.decode()
    assert "gpt-4o-mini" not in html and "bravo" not in html
    assert "?job=nightly-1" in html and "?model=claude-haiku-4-5" in html


def test_a_batch_links_to_its_entries(root, ledger):
    batch = BatchFactory(name="nightly", job="nightly-1")

    listing = root.get(reverse("admin:tracking_batch_changelist")).content.decode()
    page = root.get(reverse("admin:tracking_batch_change", args=[batch.pk])).content.decode()

    link = f'href="{LIST}?job=nightly-1"'
    assert link in listing and link in page
    assert shown(get_list(root, job="nightly-1")) == pks(ledger, "yesterday")


def test_the_entry_page_reads_in_words_and_tables(root, ledger, gpt4o_prices):
    with time_machine.travel(NOW, tick=False):
        priced = record(provider="openai", model="gpt-4o", operation="chat", input_tokens=1_234_567,
                        output_tokens=2_000, tags={"feature": "chat", "env": "prod"}, job="nightly-1",
                        duration_ms=12_345)  # fmt: skip
    gpu = root.get(reverse("admin:tracking_costentry_change", args=[ledger["gpu"].pk])).content.decode()
    html = root.get(reverse("admin:tracking_costentry_change", args=[priced.pk])).content.decode()

    assert "GPU idle" in gpu and "gpu_idle" not in gpu.split("<body")[1].replace("operation:gpu_idle", "")
    # The prices used: a row per part, the price per 1M tokens, the amount with its currency.
    table = html[html.index('class="cc-provenance"') :]
    table = table[: table.index("</table>")]
    assert "<th>unit price</th>" in table
    assert '<td>input tokens</td><td class="cc-num">1,234,567</td><td>2.50 USD / 1M input tokens</td>' in table
    # 1,234,567 x 0.0000025 + 2,000 x 0.00001: to 6 places, exactly on hover
    assert 'title="3.1064175 USD exactly">3.106418 USD<' in table
    assert '"price_id"' not in html and "&quot;" not in table
    # Tags as a table, the job linked to its entries, the duration with its unit.
    assert "<td>feature</td><td>chat</td>" in html
    assert f'href="{LIST}?job=nightly-1"' in html
    assert "12,345 ms" in html
    # The list says it in words too: GPU idle, not gpu_idle.
    listing = get_list(root, scope="operation:gpu_idle").content.decode()
    assert "GPU idle" in listing


def test_the_price_history_reads_per_million_tokens(root, gpt4o_prices):
    price = gpt4o_prices["input_token"]
    html = root.get(reverse("admin:tracking_price_change", args=[price.pk])).content.decode()

    history = html[html.index('class="price-history"') :]
    history = history[: history.index("</table>")]
    assert "2.50 USD / 1M input tokens" in history
    assert "per token (2.50 USD per 1M tokens is 0.0000025)" in html  # the help under the input


# --- in a browser, at 1440x1000 -------------------------------------------------------------------

ARTEFACTS = Path(os.environ.get("COSTCONTROL_TEST_ARTEFACTS") or settings.BASE_DIR / "var" / "test-artefacts")
WIDTH, HEIGHT = 1440, 1000
PASSWORD = "entry-screens-password"

needs_browser = pytest.mark.skipif(bool(missing_browser()), reason=missing_browser())


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium(width=WIDTH, height=HEIGHT, exact_viewport=True) as driver:
        yield driver


def save(driver: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    clip = {"x": 0, "y": 0, "width": WIDTH, "height": min(height, 3 * HEIGHT), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    (ARTEFACTS / name).write_bytes(base64.b64decode(shot["data"]))


@needs_browser
def test_the_cost_entry_list_fits_1440_px_with_its_important_columns(transactional_db, live_server, browser):
    from selenium.webdriver.common.by import By

    PriceFactory(provider="anthropic", model="claude-sonnet-4-5-20250929-with-a-long-deployment-name", operation="chat")
    TeamFactory(name="machine-learning-platform")
    for i in range(30):
        record(
            provider="anthropic",
            model="claude-sonnet-4-5-20250929-with-a-long-deployment-name",
            operation="chat",
            service=f"lead-generation-enrichment-service-{i % 3}",
            subject=f"customer-{i:04d}@a-rather-long-customer-domain.example.com",
            job="nightly-lead-generation-2026-03-17T02:00:00Z" if i % 2 else "",
            team="machine-learning-platform",
            amount=f"{1234 + i}.5678",
            outcome="error" if i % 7 == 0 else "success",
            occurred_at=datetime.now(UTC) - timedelta(hours=i),
            duration_ms=1000 + i,
        )
    User.objects.create_superuser("lead", "lead@example.com", PASSWORD)
    browser.get(f"{live_server.url}/admin/login/?next={LIST}")
    browser.find_element(By.NAME, "username").send_keys("lead")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    browser.find_element(By.ID, "result_list")

    for url, name in ((LIST, "cost-entries.png"), (f"{LIST}?service=lead-generation-enrichment-service-1", "cost-entries-filtered.png")):  # fmt: skip
        browser.get(f"{live_server.url}{url}")
        assert browser.execute_script("return window.innerWidth") == WIDTH
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), url
        # Every column's header is on screen: when, model, who, amount, pricing, outcome.
        for column in ("occurred_at", "what", "who", "amount_display", "pricing_shown", "outcome_shown"):
            right = browser.execute_script(
                "return document.querySelector(arguments[0]).getBoundingClientRect().right", f"th.column-{column}"
            )
            assert right <= WIDTH, f"{column} is off screen at {right}px"
        save(browser, name)
    total = browser.find_element(By.ID, "cc-entry-total").text
    assert re.search(r"[0-9]{2},[0-9]{3}\.[0-9]{2} USD \(10 entries\)", total), total

    # An entry priced from the catalog: its prices used, as a table.
    for unit, price in (("input_token", "0.0000025"), ("output_token", "0.00001")):
        PriceFactory(provider="openai", model="gpt-4o", operation="chat", unit=unit, unit_price=price)
    priced = record(provider="openai", model="gpt-4o", operation="chat", input_tokens=1_234_567, output_tokens=2_000,
                    tags={"feature": "chat"}, service="support", subject="user-42", occurred_at=datetime.now(UTC))  # fmt: skip
    browser.get(f"{live_server.url}{reverse('admin:tracking_costentry_change', args=[priced.pk])}")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.cc-provenance tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows[:2]] == [
        "2.50 USD / 1M input tokens",
        "10.00 USD / 1M output tokens",
    ]
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    save(browser, "cost-entry.png")

    # A batch's entries are one click from the batch list.
    BatchFactory(name="nightly-lead-generation", job="nightly-lead-generation-2026-03-17T02:00:00Z")
    browser.get(f"{live_server.url}{reverse('admin:tracking_batch_changelist')}")
    browser.find_element(By.PARTIAL_LINK_TEXT, "its entries").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")) == 15
    assert "15 entries" in browser.find_element(By.ID, "cc-entry-total").text
