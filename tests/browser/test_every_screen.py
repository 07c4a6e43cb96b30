"""Every screen of the admin in a real browser, at 1440 x 1000, as a person would see it.

After logging in through the login form, the walk opens the admin index, every app's index, every
registered model's change list, add page and the change page of one of its objects (from the admin
site's registry, so a model registered later is walked too), the cost dashboard, the API docs and
every custom admin page a link leads to. On each screen it checks what a person would trip over:

- nothing scrolls sideways (the page, or a box inside it such as the change list's table, naming the
  columns out of sight);
- no error in the browser's console, no request answered 4xx/5xx;
- every chart shown is drawn (painted pixels, and data where Chart.js draws it);
- no request goes to another host than this server;
- numbers are formatted for people (no raw ledger decimals such as 0.002500000);
- dates are written one way, "2026-12-04 14:05" (no "Dec. 4, 2026", "12/04/2026", "2:05 p.m.").

Every problem of a screen is listed in its one failure message, so one run lists them all. A
full-page screenshot of each screen goes to var/screenshots/<name>.png (COSTCONTROL_SCREENSHOTS
overrides it); `make screenshots` runs just this walk. Skipped, with the reason, where Chromium, its
driver or Selenium is missing; no browser is ever downloaded.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.db import models
from django.test import RequestFactory
from django.urls import Resolver404, resolve, reverse

from tests.chromium import missing_browser

from .walk import USERNAME, Screen, Walk

if reason := missing_browser():
    pytest.skip(reason, allow_module_level=True)

# The database: created for these tests, and whatever a test writes itself is rolled back (conftest.py).
pytestmark = pytest.mark.usefixtures("db")

MODELS: list[type[models.Model]] = sorted(admin.site._registry, key=lambda m: m._meta.label_lower)
APP_LABELS = sorted({m._meta.app_label for m in MODELS})


def model_id(model: type[models.Model]) -> str:
    return model._meta.label_lower


# --- what every screen is checked for ----------------------------------------------------------------

# A ledger amount as stored (9 places: 0.002500000), or any number with more than 2 decimal places
# that ends in a zero (1.500, 0.0250), or with more than 6: money is shown to cents, or to the places
# the amount needs, at most 6 (unit costs).
RAW_NUMBER = re.compile(r"(?<![\d.,])\d[\d,]*\.(?:\d{7,}|\d{2,}0)(?![\d.])")
# Where such numbers are right: (screens, numbers, why).
RAW_NUMBER_ALLOWED = (
    (
        re.compile(r"tracking\.price$|tracking_price_rules$"),
        re.compile(r"\d+\.\d*[1-9]"),
        "a unit price is shown exactly as the catalog holds it (0.00002778 USD/second): rounded, it would "
        "misstate the price the ledger charges; exact means no trailing zeros",
    ),
    (
        re.compile(r"django_celery_beat\.(solarschedule|periodictask)$"),
        re.compile(r"-?\d{1,3}\.\d{6}"),
        "a solar schedule's latitude and longitude: degrees to django-celery-beat's 6 places, not money",
    ),
)
# Dates in any other way than the admin's one format (settings.DATE_FORMAT / DATETIME_FORMAT).
OTHER_DATE_FORMATS = {
    "a month-name date": re.compile(r"\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.? \d{1,2}, \d{4}\b"),
    "a month/day/year date": re.compile(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b"),
    "a 12-hour time": re.compile(r"\b\d{1,2}(?::\d{2})? ?[ap]\.?m\.?(?!\w)", re.IGNORECASE),
    "a raw timestamp": re.compile(
        r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}[\d:.]*(?:Z|[+-]\d{2}:?\d{2})?"
        r"|\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+(?:[+-]\d{2}:\d{2})?"
    ),
}


def readable(screen: Screen, text: str) -> str:
    """The text a person reads as numbers and dates: keys shown verbatim (walk.VERBATIM) are left out."""
    for verbatim in screen.verbatim:
        text = text.replace(verbatim, " ")
    return text


def raw_numbers(screen: Screen, text: str) -> list[str]:
    text = readable(screen, text)
    for pattern in OTHER_DATE_FORMATS.values():
        text = pattern.sub(" ", text)  # reported as dates, not again as numbers
    return [
        number
        for number in RAW_NUMBER.findall(text)
        if not any(s.search(screen.name) and n.fullmatch(number) for s, n, _why in RAW_NUMBER_ALLOWED)
    ]


def examples(values: list[str]) -> str:
    unique = list(dict.fromkeys(values))
    return ", ".join(unique[:4]) + (f" and {len(unique) - 4} more" if len(unique) > 4 else "")


def format_problems(screen: Screen) -> list[str]:
    problems = []
    by_column: dict[str, list[str]] = {}
    for column, text in screen.cells:
        by_column.setdefault(column, []).extend(raw_numbers(screen, text))
    for column, numbers in by_column.items():
        if numbers:
            title = screen.headers.get(column) or column or "?"
            problems.append(f"raw numbers in the column {title!r} ({len(numbers)} cells): {examples(numbers)}")
    in_cells = {n for numbers in by_column.values() for n in numbers}
    if elsewhere := [n for n in raw_numbers(screen, screen.text) if n not in in_cells]:
        problems.append(f"raw numbers on the page: {examples(elsewhere)}")
    for what, pattern in OTHER_DATE_FORMATS.items():
        if found := pattern.findall(readable(screen, screen.text)):
            problems.append(f"{what} where the admin writes 2026-12-04 14:05: {examples(found)}")
    return problems


def check(screen: Screen, *, numbers: bool = True) -> None:
    problems = screen.problems + (format_problems(screen) if numbers else [])
    assert not problems, f"{screen.name} ({screen.url}), screenshot {screen.screenshot}:\n- " + "\n- ".join(problems)


def superuser_request() -> Any:
    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.get(username=USERNAME)
    return request


def admin_url(model: type[models.Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


# --- the walk ------------------------------------------------------------------------------------------


def test_the_login_page(walk: Walk) -> None:
    check(walk.screens["/admin/login/?next=/admin/"])


def test_the_admin_index(walk: Walk) -> None:
    check(walk.open("admin-index", reverse("admin:index")))


@pytest.mark.parametrize("app_label", APP_LABELS)
def test_an_app_index(walk: Walk, app_label: str) -> None:
    check(walk.open(f"app-{app_label}", reverse("admin:app_list", kwargs={"app_label": app_label})))


@pytest.mark.parametrize("model", MODELS, ids=model_id)
def test_a_change_list(walk: Walk, model: type[models.Model]) -> None:
    check(walk.open(f"list-{model_id(model)}", admin_url(model, "changelist")))


@pytest.mark.parametrize("model", MODELS, ids=model_id)
def test_an_add_page(walk: Walk, model: type[models.Model]) -> None:
    if not admin.site._registry[model].has_add_permission(superuser_request()):
        pytest.skip(f"{model._meta.verbose_name_plural} are not added in the admin")
    check(walk.open(f"add-{model_id(model)}", admin_url(model, "add")))


@pytest.mark.parametrize("model", MODELS, ids=model_id)
def test_a_change_page(walk: Walk, model: type[models.Model]) -> None:
    if not model._meta.managed:
        pytest.skip(f"{model._meta.verbose_name} is a page, not a table: it has no objects to open")
    model_admin = admin.site._registry[model]
    request = superuser_request()
    obj = model_admin.get_queryset(request).order_by("-pk").first()
    assert obj is not None, (
        f"no {model._meta.verbose_name} to open: seed one in tests/browser/conftest.py (seed_every_screen)"
    )
    check(walk.open(f"change-{model_id(model)}", admin_url(model, "change", quote(obj.pk))))


def test_a_budget_template_its_values_and_one_value(walk: Walk) -> None:
    from budgets.models import Budget
    from budgets.selectors import template_summary

    template = Budget.objects.templates().get(scope="subject:*")
    summary = template_summary(template)
    assert summary.top, "the walk's alert pass gave no end user a budget of the template"
    value = summary.top[0].budget
    page = walk.open("change-budget-template", admin_url(Budget, "change", template.pk))
    assert f"values\t{summary.values}" in page.text, f"screenshot {page.screenshot}"
    assert all(s.budget.value in page.text for s in summary.top), f"screenshot {page.screenshot}"
    check(page)
    values = f"{admin_url(Budget, 'changelist')}?template__id__exact={template.pk}"
    check(walk.open("list-budget-template-values", values))
    check(walk.open("change-budget-template-value", admin_url(Budget, "change", value.pk)))


def test_the_cost_dashboard_draws_its_charts(walk: Walk) -> None:
    screen = walk.open("dashboard", reverse("admin:analytics_dashboard_changelist"))
    assert [c for c in screen.canvases if c["shown"]], f"the dashboard shows no chart; screenshot {screen.screenshot}"
    check(screen)


def test_the_api_docs_render_their_operations(walk: Walk) -> None:
    screen = walk.open("api-docs", "/api/v1/docs", ready_css=".swagger-ui .opblock")
    operations = walk.driver.execute_script("return document.querySelectorAll('.swagger-ui .opblock').length")
    assert operations >= 5, f"Swagger UI shows {operations} operations; screenshot {screen.screenshot}"
    # Example values of the schema are the API's, not the admin's: only the browser checks apply.
    check(screen, numbers=False)


# Admin URL names of Django's own pages; any other admin page is a custom one.
STANDARD_VIEWS = {"index", "app_list", "login", "logout", "password_change", "password_change_done", "jsi18n"}
STANDARD_VIEWS |= {"autocomplete", "view_on_site"}
STANDARD_SUFFIXES = ("_changelist", "_add", "_change", "_delete", "_history")


def custom_admin_page(walk: Walk, url: str) -> str:
    """The URL name of a custom admin page of this server, or "" (Django's own pages, downloads, elsewhere)."""
    parts = urlsplit(url)
    if parts.netloc != walk.origin or not parts.path.startswith("/admin/") or parts.path.endswith(".csv"):
        return ""
    try:
        match = resolve(parts.path)
    except Resolver404:
        return ""
    name = match.url_name or ""
    if name in STANDARD_VIEWS or name.endswith(STANDARD_SUFFIXES) or "export" in name:
        return ""
    return name


def local(url: str) -> str:
    """The path and query of a URL: how the walk names the screen it opened."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_every_custom_admin_page_a_link_leads_to(walk: Walk) -> None:
    """Custom pages (a price's "all rules", and whatever pages later issues add) are found by following
    the links of every screen walked before, then of the custom pages themselves."""
    found: dict[str, Screen] = {}
    queue = [link for screen in list(walk.screens.values()) for link in screen.links]
    while queue:
        link = queue.pop(0)
        name = custom_admin_page(walk, link)
        if name and name not in found:
            found[name] = walk.open(f"custom-{name}", local(link))
            queue += found[name].links
    assert found, "no link leads to a custom admin page (the price list links each price's rules)"
    failures = []
    for screen in found.values():
        try:
            check(screen)
        except AssertionError as failure:
            failures.append(str(failure))
    assert not failures, "\n\n".join(failures)


def test_no_page_asked_another_host_for_anything(walk: Walk) -> None:
    """Over the whole run (the login included): every request went to this server."""
    assert len(walk.screens) > 1, "run the whole walk: this checks what its screens asked for"
    foreign = sorted({url for url in walk.requests if walk.foreign(url)})
    assert not foreign, "requests to other hosts:\n" + "\n".join(foreign)


# A page of this server spoiled on purpose with one of each problem the walk looks for.
SPOIL_JS = """
document.querySelector('#content').insertAdjacentHTML('beforeend', `
  <div id="probe-box" style="overflow-x: auto; width: 300px"><table><thead><tr>
    <th style="min-width: 200px">in sight</th><th style="min-width: 200px">out of sight</th></tr></thead></table></div>
  <div style="width: 3000px">a page wider than the window</div>
  <canvas id="probe-chart" width="200" height="100"></canvas>
  <img src="http://127.0.0.2:9/elsewhere.png" alt="">
  <p>0.002500000 USD, 12.500 %, 10,000.000000000 tokens on Dec. 4, 2026, 2:05 p.m.,
     recorded 2026-12-04T14:05:00+00:00</p>
  <div class="field-idempotency_key">key:2025-01-02T03:04:05+00:00:0.100000000</div>`);
const script = document.createElement('script');
script.src = '/static/no-such-file.js';
document.body.appendChild(script);
setTimeout(() => { throw new Error('a broken script'); }, 0);
"""


def test_the_walk_sees_every_kind_of_problem_it_looks_for(walk: Walk) -> None:
    """The checks are real: on a page spoiled with one of each problem, each is reported."""
    probe = Walk(driver=walk.driver, base_url=walk.base_url)  # its requests stay out of the walk's
    walk.driver.get(walk.base_url + reverse("admin:index"))
    probe._read_logs(Screen(name="before", url=""))  # what the page itself did is not the probe's
    walk.driver.execute_script(SPOIL_JS)
    time.sleep(1)  # the refused image, the missing script and the error reach the logs
    screen = Screen(name="spoiled", url=walk.base_url + reverse("admin:index"))
    probe.inspect(screen, screenshot=False)
    problems = "\n".join(screen.problems + format_problems(screen))
    for expected in (
        "the page scrolls sideways",
        "div#probe-box scrolls sideways",
        "columns out of sight: out of sight",
        "chart #probe-chart is blank",
        "request to another host: http://127.0.0.2:9/elsewhere.png",
        "/static/no-such-file.js answered 404",
        "browser console error:",
        "a broken script",
        "raw numbers on the page: 0.002500000, 12.500, 10,000.000000000",
        "a month-name date where the admin writes 2026-12-04 14:05: Dec. 4, 2026",
        "a 12-hour time where the admin writes 2026-12-04 14:05: 2:05 p.m.",
        "a raw timestamp where the admin writes 2026-12-04 14:05: 2026-12-04T14:05:00+00:00\n",
    ):
        assert expected.lower() in problems.lower() + "\n", f"the walk missed {expected!r}; it saw:\n{problems}"
    # A key is shown as stored: what it holds is neither a date nor a number to format.
    assert "2025-01-02" not in problems and "0.100000000" not in problems, problems
