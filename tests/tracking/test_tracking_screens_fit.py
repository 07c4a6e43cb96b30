"""The tracking screens and the dashboard's spend by provider, as a finance lead reads them at 1440 px
(issue 19): the columns a person needs, secondary facts folded under the main one, numbers written for
people (one call's amount to the places it needs, at most 6, with its currency; GPU-hours to 2 places;
watts whole; seconds as 1h 00m), and nothing that scrolls sideways, even with long names and many
providers (a browser test at the end)."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.money import format_money_fine
from tests.chromium import chromium, missing_browser
from tests.factories import BatchFactory, PriceFactory
from tracking.admin_display import duration_words
from tracking.models import CostEntry, GpuDevice, GpuSample, Price
from tracking.services import cost_entry_record

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)
# A number as the ledger stores it, or with more than 6 places, or 3+ places ending in 0 (64.000).
RAW = re.compile(r"(?<![\d.,])\d[\d,]*\.(?:\d{7,}|\d{2,}0)(?![\d.])")


@pytest.fixture
def root() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "not-used"))
    return client


def record(**event: Any) -> CostEntry:
    """An entry with an explicit amount, its provider in the catalog (which refuses unknown providers)."""
    if not Price.objects.filter(provider=event["provider"]).exists():
        PriceFactory(provider=event["provider"], model=event["model"], operation="chat")
    event.setdefault("occurred_at", NOW - timedelta(hours=1))
    event.setdefault("idempotency_key", f"fit:{CostEntry.objects.count()}")
    return cost_entry_record(**event).entry


def text(html: str) -> str:
    """What a person reads: the page without its tags, scripts and attributes."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def cells(html: str, column: str) -> list[str]:
    """The text of each cell of a change list column (td or th of class field-<column>)."""
    found = re.findall(rf'<t[dh] class="field-{column}[^"]*">(.*?)</t[dh]>', html, re.S)
    return [text(cell).strip() for cell in found]


def headers(html: str) -> list[str]:
    """The change list's columns, by the field each one shows."""
    return re.findall(r'<th scope="col" class="[^"]*column-([a-z_]+)', html)


def content(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


# --- numbers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("0.00182295", "0.001823 USD"),  # one call: the places it needs, at most 6
        ("0.105", "0.105 USD"),
        ("0.5", "0.50 USD"),  # at least cents
        ("1234.5", "1,234.50 USD"),
        ("0.0000004", "0.00 USD"),  # below a millionth: nothing to show
    ],
)
def test_one_calls_amount_shows_the_places_it_needs_up_to_six_with_its_currency(amount: str, shown: str) -> None:
    assert format_money_fine(Decimal(amount), "USD") == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(Decimal("3600.000000"), "1h 00m"), (7500, "2h 05m"), (270, "4m 30s"), (Decimal("42.7"), "42 s")],
)
def test_a_duration_reads_in_hours_and_minutes(seconds: Any, shown: str) -> None:
    assert duration_words(seconds) == shown


def test_a_reservation_and_a_cost_entry_write_one_calls_amount_the_same_way() -> None:
    """budgets.admin shows a reservation with the function the ledger's list uses (core.money), not a copy."""
    import budgets.admin

    assert budgets.admin._money_fine(Decimal("0.00182295"), "EUR") == format_money_fine(Decimal("0.00182295"), "EUR")
    assert budgets.admin.format_money_fine is format_money_fine


# --- the lists and pages, as the server writes them --------------------------------------------------------


def test_the_cost_entry_list_shows_a_calls_amount_to_six_places_and_the_exact_one_on_hover(root: Client) -> None:
    entry = record(provider="openai", model="gpt-4o-mini", amount="0.00182295")

    html = content(root, reverse("admin:tracking_costentry_changelist"))
    page = content(root, reverse("admin:tracking_costentry_change", args=[entry.pk]))

    assert cells(html, "amount_display") == ["0.001823 USD invoiced"]
    assert 'title="0.00182295 USD exactly"' in html
    assert not RAW.findall(text(html))
    assert "0.001823 USD" in text(page) and not RAW.findall(text(page))


def test_the_rollup_list_folds_failed_calls_under_the_events_and_writes_sums_to_the_cent(root: Client) -> None:
    with time_machine.travel(NOW, tick=False):
        record(provider="openai", model="gpt-4o", amount="1.08778919", service="search")
        record(provider="openai", model="gpt-4o", amount="0.5", service="search", outcome="error")
        record(provider="mistral", model="mistral-small", amount="0.00219855", service="search")

    html = content(root, reverse("admin:tracking_spendrollup_changelist") + "?q=provider%3A")

    assert headers(html) == ["scope", "hour", "amount_display", "events_shown", "tokens"]
    by_scope = dict(zip(cells(html, "scope"), cells(html, "amount_display"), strict=True))
    assert by_scope == {"provider:openai": "1.59 USD", "provider:mistral": "0.002199 USD"}
    assert 'title="1.58778919 USD exactly"' in html
    events = dict(zip(cells(html, "scope"), cells(html, "events_shown"), strict=True))
    assert events == {"provider:openai": "2 1 failed", "provider:mistral": "1"}
    assert not RAW.findall(text(html))


@pytest.fixture
def batch(db: Any) -> Any:
    finished = timezone.now() - timedelta(hours=1)
    return BatchFactory(
        name="nightly-leads",
        job="nightly-leads-20261204",
        started_at=finished - timedelta(hours=2, minutes=5),
        finished_at=finished,
        leads=89,
        cost=Decimal("1.099361000"),
        cost_per_lead=Decimal("0.012352371"),
        month_cost=Decimal("53.981049840"),
        month_leads=326,
        month_cost_per_lead=Decimal("0.165586042"),
        cost_computed_at=finished,
    )


def test_the_batch_list_folds_the_job_the_duration_and_the_month_under_their_figures(root: Client, batch: Any) -> None:
    html = content(root, reverse("admin:tracking_batch_changelist"))

    assert headers(html) == [
        "batch_shown",
        "started_shown",
        "leads_shown",
        "cost_shown",
        "per_lead_shown",
        "month_per_lead_shown",
    ]
    assert cells(html, "batch_shown") == ["nightly-leads job nightly-leads-20261204"]
    assert cells(html, "started_shown")[0].endswith(" 2h 05m")
    assert cells(html, "leads_shown") == ["89"]
    assert cells(html, "cost_shown") == ["1.10 USD its entries"]
    assert cells(html, "per_lead_shown") == ["0.012352 USD"]
    assert cells(html, "month_per_lead_shown") == ["0.165586 USD all spend 53.98 USD / 326 leads"]
    assert f'href="{reverse("admin:tracking_costentry_changelist")}?job=nightly-leads-20261204"' in html
    assert not RAW.findall(text(html))


def test_the_batch_page_writes_its_cost_figures_for_people(root: Client, batch: Any) -> None:
    page = text(content(root, reverse("admin:tracking_batch_change", args=[batch.pk])))

    for shown in ("1.10 USD", "0.012352 USD", "53.98 USD", "326", "0.165586 USD", "2h 05m"):
        assert shown in page
    assert not RAW.findall(page), RAW.findall(page)


@pytest.fixture
def samples(db: Any) -> list[GpuSample]:
    now = timezone.now().replace(microsecond=0)
    device = GpuDevice.objects.create(
        uuid="GPU-demo-0000-0000-0000-000000000001",
        name="NVIDIA L4",
        memory_total=24 * 2**30,
        first_seen=now - timedelta(hours=3),
        last_seen=now,
    )
    common = {"device": device, "memory_total": 24 * 2**30, "memory_used": 18 * 2**30}
    return [
        GpuSample.objects.create(**common, sampled_at=now - timedelta(hours=2), utilisation_percent=12),
        GpuSample.objects.create(
            **common,
            sampled_at=now - timedelta(hours=1),
            utilisation_percent=79,
            power_watts=Decimal("64.000"),
            processes=[{"pid": 4242, "used_memory": 2 * 2**30}],
            elapsed_seconds=Decimal("3600.000000"),
            billed=True,
            busy_gpu_hours=Decimal("0.790000000"),
            idle_gpu_hours=Decimal("0.210000000"),
            amount=Decimal("0.5"),
        ),
    ]


def test_the_gpu_sample_list_folds_memory_power_and_processes_under_the_utilisation(
    root: Client, samples: list[GpuSample]
) -> None:
    html = content(root, reverse("admin:tracking_gpusample_changelist"))

    assert headers(html) == [
        "sampled_at",
        "device_shown",
        "utilisation",
        "elapsed_shown",
        "gpu_hours",
        "amount_display",
    ]
    assert cells(html, "device_shown") == ["NVIDIA L4", "NVIDIA L4"]
    assert cells(html, "utilisation") == ["79 % 18.0 GiB of 24.0 GiB · 64 W · 1 process", "12 % 18.0 GiB of 24.0 GiB"]
    assert cells(html, "elapsed_shown") == ["1h 00m", "-"]
    assert cells(html, "gpu_hours") == ["0.79 busy 0.21 idle", "-"]
    assert cells(html, "amount_display") == ["0.50 USD", "not billed"]
    assert not RAW.findall(text(html))


def test_the_gpu_sample_page_writes_watts_seconds_and_gpu_hours_for_people(
    root: Client, samples: list[GpuSample]
) -> None:
    page = text(content(root, reverse("admin:tracking_gpusample_change", args=[samples[1].pk])))

    for shown in ("64 W", "1h 00m (3,600 s)", "Busy GPU-hours: 0.79", "Idle GPU-hours: 0.21", "4242 2.0 GiB"):
        assert shown in page
    assert not RAW.findall(page), RAW.findall(page)


def test_the_price_list_folds_the_tier_and_its_validity_into_four_columns(root: Client) -> None:
    PriceFactory(
        provider="gemini",
        model="gemini-2.5-pro",
        unit="input_token",
        unit_price=Decimal("0.0000025"),
        service_tier="priority",
        above_tokens=200_000,
        variant="eu",
        valid_from=NOW - timedelta(days=30),
    )

    html = content(root, reverse("admin:tracking_price_changelist"))

    assert headers(html) == ["model_shown", "price_display", "tier_shown", "validity"]
    assert cells(html, "model_shown") == ["gemini/gemini-2.5-pro all rules"]
    assert cells(html, "tier_shown") == ["priority above 200k tokens · variant eu"]
    assert cells(html, "validity") == [f"in force since {timezone.localtime(NOW - timedelta(days=30)):%Y-%m-%d %H:%M}"]
    assert reverse("admin:tracking_price_rules") + "?provider=gemini&amp;model=gemini-2.5-pro" in html


# --- the dashboard: spend by provider ---------------------------------------------------------------------

PROVIDERS = ("openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "replicate", "stability", "cohere", "groq")


@pytest.fixture
def many_providers(db: Any) -> None:
    """Ten providers with spend today: 10.00 USD, 9.00 USD, ... 1.00 USD."""
    for i, provider in enumerate(PROVIDERS):
        record(
            provider=provider,
            model=f"{provider}-large-model-with-a-long-deployment-name",
            amount=str(10 - i),
            occurred_at=timezone.now() - timedelta(minutes=5),
        )


def test_beside_its_chart_the_spend_by_provider_is_a_provider_a_row_with_the_total(
    root: Client, many_providers: None
) -> None:
    html = content(root, reverse("admin:analytics_dashboard_changelist"))

    side = html[html.index('id="t-providers"') :]
    side = side[: side.index("</table>")]
    rows = [text(row).strip() for row in re.findall(r"<tr>(.*?)</tr>", side, re.S)]
    assert rows[0] == "provider spend share"
    assert rows[1:3] == ["openai 10.00 USD 18.2 %", "anthropic 9.00 USD 16.4 %"]
    assert rows[-1] == "total 55.00 USD 100 %"
    # The spend per day, a column per provider, waits below the chart, its CSV beside it.
    below = html[html.index('class="cc-below"') :]
    assert below.index('id="t-spend_by_provider"') < below.index("<details")
    assert "spend_by_provider.csv" in below
    csv = b"".join(root.get(reverse("admin:analytics_dashboard_export", args=["providers"])).streaming_content)
    assert csv.decode().splitlines()[-1] == "total,55.00,100"


# --- in a browser: nothing scrolls sideways at 1440 px ------------------------------------------------------


@pytest.fixture
def browser() -> Any:
    """Chromium as the every-screen walk starts it (1440 x 1000 viewport, console and network logged)."""
    if reason := missing_browser():
        pytest.skip(reason)
    with chromium(exact_viewport=True, logs=True) as driver:
        yield driver


def test_every_tracking_list_and_the_dashboard_fit_at_1440_px_with_long_names_and_ten_providers(
    transactional_db: Any,
    live_server: Any,
    browser: Any,
    many_providers: None,
    batch: Any,
    samples: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from selenium.webdriver.common.by import By

    from tests.browser import walk as walk_module
    from tests.browser.test_every_screen import format_problems
    from tests.browser.walk import PASSWORD, USERNAME, Screen, Walk

    # The screenshots (fit-*.png) go with the other test artefacts, not among the walk's.
    artefacts = os.environ.get("COSTCONTROL_TEST_ARTEFACTS") or settings.BASE_DIR / "var" / "test-artefacts"
    monkeypatch.setattr(walk_module, "SCREENSHOTS", Path(artefacts))

    User.objects.create_superuser(USERNAME, "walker@example.com", PASSWORD)
    PriceFactory(
        provider="anthropic",
        model="claude-sonnet-4-5-20250929-with-a-long-deployment-name",
        unit="cache_write_1h_token",
        unit_price=Decimal("0.000006"),
        service_tier="priority",
        above_tokens=200_000,
        variant="inference_geo:us",
    )
    walk = Walk(driver=browser, base_url=live_server.url)
    walk.open("fit-login", "/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(USERNAME)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    problems = []
    for name in ("costentry", "spendrollup", "batch", "gpusample", "price"):
        screen = walk.open(f"fit-{name}", reverse(f"admin:tracking_{name}_changelist"))
        problems += [f"{name}: {p}" for p in screen.problems + format_problems(screen)]
    dashboard = walk.open("fit-dashboard", reverse("admin:analytics_dashboard_changelist"))
    problems += [f"dashboard: {p}" for p in dashboard.problems + format_problems(dashboard)]
    # Opened, the spend per day (a column for each of the ten providers) fits too.
    summary = browser.find_elements(By.CSS_SELECTOR, ".cc-below details summary")
    if not summary:
        problems.append("dashboard: no spend per day (collapsed) under the spend by provider chart")
    else:
        summary[0].click()
        opened = Screen(name="fit-dashboard-per-day", url=dashboard.url)
        walk.inspect(opened)
        problems += [f"dashboard, spend per day opened: {p}" for p in opened.problems]
    assert not problems, "\n".join(problems)
