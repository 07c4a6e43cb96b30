"""Provider bills: pulled from the OpenAI and Anthropic cost APIs (a local fake speaking their formats) or
uploaded as CSV, stored per day beside the ledger; a day is imported whole or not at all."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse

from tests.admin_clients import staff_client, superuser_client
from tests.factories import TeamFactory
from tests.tracking.fake_billing import ANTHROPIC_KEY, OPENAI_KEY, FakeBilling, anthropic_result, openai_result
from tracking.billing import (
    BillingError,
    billing_key,
    billing_key_set,
    bills_import_csv,
    bills_pull,
    bills_pull_enabled,
)
from tracking.models import BilledCost, BillingDay, BillingSource, CostEntry

pytestmark = pytest.mark.django_db

TODAY = date(2026, 11, 10)
DAY = TODAY - timedelta(days=1)  # the last closed day


@pytest.fixture
def fake() -> Iterator[FakeBilling]:
    server = FakeBilling().start()
    yield server
    server.stop()


@pytest.fixture
def openai_source(fake: FakeBilling) -> BillingSource:
    source = BillingSource.objects.create(
        name="OpenAI org", kind="openai", provider="openai", api_url=fake.base, days_back=1
    )
    billing_key_set(source, OPENAI_KEY)
    return source


@pytest.fixture
def anthropic_source(fake: FakeBilling) -> BillingSource:
    source = BillingSource.objects.create(
        name="Anthropic org", kind="anthropic", provider="anthropic", api_url=fake.base + "/v1", days_back=1
    )
    billing_key_set(source, ANTHROPIC_KEY)
    return source


def lines(source: BillingSource, day: date = DAY) -> list[tuple[str, str, str, str, Decimal]]:
    return sorted(
        BilledCost.objects.filter(source=source, day=day).values_list(
            "model", "account", "description", "currency", "amount"
        )
    )


def five_openai_lines() -> list[dict]:
    return [
        openai_result("gpt-4o-2024-08-06, input", 1.25),
        openai_result("gpt-4o-2024-08-06, output", 2.5),
        openai_result("gpt-4o-mini-2024-07-18, cached input", 0.8351649999999999),
        openai_result("web search tool calls", 0.03, project=None),
        openai_result(None, 0, project="proj_other"),
    ]


# --- the APIs ---------------------------------------------------------------------------------------


def test_openai_costs_are_read_over_every_page_as_exact_decimals(fake, openai_source):
    fake.openai[DAY] = five_openai_lines()

    [result] = bills_pull(openai_source, today=TODAY)

    assert (result.ok, result.lines, result.changed) == (True, 5, True)
    assert lines(openai_source) == [
        ("", "", "web search tool calls", "USD", Decimal("0.03")),
        ("", "proj_other", "", "USD", Decimal("0")),
        ("gpt-4o-2024-08-06", "proj_abc", "gpt-4o-2024-08-06, input", "USD", Decimal("1.25")),
        ("gpt-4o-2024-08-06", "proj_abc", "gpt-4o-2024-08-06, output", "USD", Decimal("2.5")),
        # a JSON number with float noise, read as a Decimal and rounded half-to-even to 9 places
        ("gpt-4o-mini-2024-07-18", "proj_abc", "gpt-4o-mini-2024-07-18, cached input", "USD", Decimal("0.835165000")),
    ]
    assert BilledCost.objects.filter(source=openai_source).first().provider == "openai"
    paths, queries, headers = zip(*fake.requests, strict=True)
    assert len(fake.requests) == 3  # three pages of two, two and one results
    assert [q.get("page") for q in queries] == [None, ["cursor-2"], ["cursor-3"]]
    assert set(paths) == {"/v1/organization/costs"}
    first = queries[0]
    assert first["start_time"] == ["1794182400"] and first["end_time"] == ["1794268800"]  # 2026-11-09 UTC
    assert (first["bucket_width"], first["group_by"]) == (["1d"], ["project_id", "line_item"])
    assert headers[0]["Authorization"] == f"Bearer {OPENAI_KEY}"
    day = BillingDay.objects.get(source=openai_source, day=DAY)
    assert (day.status, day.lines, day.message) == ("ok", 5, "")
    openai_source.refresh_from_db()
    assert openai_source.last_success_at == openai_source.last_attempt_at and openai_source.last_error == ""
    assert not CostEntry.objects.exists()  # beside the ledger, never in it


def test_anthropic_amounts_are_lowest_currency_units_divided_exactly(fake, anthropic_source):
    fake.anthropic[DAY] = [
        anthropic_result("Claude Sonnet 4 Usage - Input Tokens", "123.45", model="claude-sonnet-4-20250514"),
        anthropic_result("Claude Sonnet 4 Usage - Output Tokens", "1000", model="claude-sonnet-4-20250514"),
        anthropic_result("Web Search Usage", "0.0000001", workspace=None),
    ]

    [result] = bills_pull(anthropic_source, today=TODAY)

    assert result.ok, result.message
    assert lines(anthropic_source) == [
        ("", "", "Web Search Usage", "USD", Decimal("0.000000001")),
        ("claude-sonnet-4-20250514", "wrkspc_01", "Claude Sonnet 4 Usage - Input Tokens", "USD", Decimal("1.2345")),
        ("claude-sonnet-4-20250514", "wrkspc_01", "Claude Sonnet 4 Usage - Output Tokens", "USD", Decimal("10")),
    ]
    path, query, headers = fake.requests[0]
    assert path == "/v1/organizations/cost_report"
    assert query["starting_at"] == ["2026-11-09T00:00:00Z"] and query["ending_at"] == ["2026-11-10T00:00:00Z"]
    assert query["group_by[]"] == ["workspace_id", "description"] and query["bucket_width"] == ["1d"]
    assert headers["x-api-key"] == ANTHROPIC_KEY and headers["anthropic-version"] == "2023-06-01"
    assert len(fake.requests) == 2  # three results, two a page


def test_a_429_is_tried_again_after_its_retry_after(fake, openai_source):
    fake.openai[DAY] = five_openai_lines()
    fake.fail_pages = {2: [429]}
    started = time.monotonic()

    [result] = bills_pull(openai_source, today=TODAY)

    assert result.ok and result.lines == 5
    assert time.monotonic() - started >= 1  # Retry-After: 1 honoured
    assert [q.get("page") for _, q, _ in fake.requests] == [None, ["cursor-2"], ["cursor-2"], ["cursor-3"]]


def test_rate_limited_beyond_the_retries_the_day_fails_and_says_so(fake, openai_source, monkeypatch):
    monkeypatch.setattr("tracking.billing.RETRY_AFTER_MAX_SECONDS", 0)
    fake.openai[DAY] = five_openai_lines()
    fake.fail_pages = {1: [429, 429, 429, 429]}

    [result] = bills_pull(openai_source, today=TODAY)

    assert not result.ok
    assert result.message == "page 1: HTTP 429 after 4 tries: status 429"
    assert not BilledCost.objects.exists()


def test_a_500_mid_way_imports_nothing_of_the_day_and_the_next_pull_does(fake, openai_source):
    fake.openai[DAY] = five_openai_lines()
    fake.fail_pages = {2: [500]}

    [result] = bills_pull(openai_source, today=TODAY)

    assert not result.ok
    assert not BilledCost.objects.exists()  # page 1's lines were not kept
    day = BillingDay.objects.get(source=openai_source, day=DAY)
    assert (day.status, day.message, day.imported_at) == ("failed", "page 2: HTTP 500: status 500", None)
    openai_source.refresh_from_db()
    assert openai_source.last_success_at is None
    assert openai_source.last_error == "1 of 1 day(s) failed; 2026-11-09: page 2: HTTP 500: status 500"

    # Days later, the failed day is read again though it is no longer among the last days_back.
    later = bills_pull(openai_source, today=TODAY + timedelta(days=5))

    assert [(r.day, r.ok) for r in later] == [(DAY, True), (TODAY + timedelta(days=4), True)]
    assert len(lines(openai_source)) == 5
    day.refresh_from_db()
    assert (day.status, day.message, day.lines) == ("ok", "", 5) and day.imported_at is not None
    openai_source.refresh_from_db()
    assert openai_source.last_error == "" and openai_source.last_success_at is not None


def test_an_outage_keeps_the_days_lines_already_imported(fake, openai_source):
    fake.openai[DAY] = five_openai_lines()
    bills_pull(openai_source, today=TODAY)
    before = list(BilledCost.objects.values_list("id", "amount"))
    fake.openai[DAY] = [openai_result("gpt-4o-2024-08-06, input", 99)] * 5
    fake.fail_pages = {3: [502]}

    [result] = bills_pull(openai_source, today=TODAY)

    assert not result.ok and "page 3: HTTP 502" in result.message
    assert list(BilledCost.objects.values_list("id", "amount")) == before
    day = BillingDay.objects.get(source=openai_source, day=DAY)
    assert (day.status, day.lines) == ("failed", 5) and day.imported_at is not None


def test_an_unreachable_provider_fails_the_days_and_they_are_tried_again(openai_source):
    openai_source.api_url = "http://127.0.0.1:9"  # discard: nothing listens
    openai_source.days_back = 2
    openai_source.save()

    results = bills_pull(openai_source, today=TODAY)

    assert [r.ok for r in results] == [False, False]
    assert "the provider cannot be reached" in results[0].message
    assert BillingDay.objects.filter(status="failed").count() == 2


def test_the_bucket_of_a_day_not_over_is_never_imported(fake, openai_source, anthropic_source):
    fake.openai[DAY] = five_openai_lines()[:1]
    fake.openai[TODAY] = [openai_result("gpt-4o-2024-08-06, input", 7)]
    fake.anthropic[TODAY] = [anthropic_result("Claude Usage", "700", model="claude-sonnet-4-20250514")]
    fake.partial_day = TODAY  # each answer also reports today so far

    results = bills_pull(openai_source, today=TODAY) + bills_pull(anthropic_source, today=TODAY)

    assert [(r.day, r.ok, r.lines) for r in results] == [(DAY, True, 1), (DAY, True, 0)]
    assert not BilledCost.objects.filter(day=TODAY).exists()
    assert not BillingDay.objects.filter(day=TODAY).exists()
    assert BillingDay.objects.get(source=anthropic_source, day=DAY).status == "ok"  # a day with no costs is complete


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (openai_result("gpt-4o, input", 1, currency="zzz"), "unknown currency 'zzz' in amount.currency"),
        (openai_result("gpt-4o, input", -0.5), "amount.value -0.5 is negative (credits and refunds are not imported)"),
        (openai_result("gpt-4o, input", "lots"), "amount.value 'lots' is not a number"),
        (openai_result("gpt-4o, input", None), "amount.value None is not a number"),
        ({"object": "organization.costs.result", "line_item": "x, y"}, "amount is missing"),
    ],
)
def test_a_bad_openai_line_fails_its_day_and_writes_nothing(fake, openai_source, bad, message):
    fake.openai[DAY] = [*five_openai_lines()[:3], bad]

    [result] = bills_pull(openai_source, today=TODAY)

    assert not result.ok
    assert result.message.startswith(f"page 2, bucket 1, result 2: {message}")
    assert not BilledCost.objects.exists()
    assert BillingDay.objects.get(source=openai_source, day=DAY).message == result.message


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (anthropic_result("Claude", "12", model="claude-x", currency="DOGE"), "unknown currency 'DOGE' in currency"),
        (anthropic_result("Claude", "-12", model="claude-x"), "amount -12 is negative"),
        (anthropic_result("Claude", "12,5", model="claude-x"), "amount '12,5' is not a number"),
        (anthropic_result("Claude", "NaN", model="claude-x"), "amount 'NaN' is not a number"),
    ],
)
def test_a_bad_anthropic_line_fails_its_day_and_keeps_what_was_there(fake, anthropic_source, bad, message):
    fake.anthropic[DAY] = [anthropic_result("Claude", "100", model="claude-x")]
    bills_pull(anthropic_source, today=TODAY)
    stored = list(BilledCost.objects.values_list("id", "amount"))
    fake.anthropic[DAY] = [anthropic_result("Claude", "200", model="claude-x"), bad]

    [result] = bills_pull(anthropic_source, today=TODAY)

    assert not result.ok and result.message.startswith("page 1, bucket 1, result 2: ")
    assert message in result.message
    assert list(BilledCost.objects.values_list("id", "amount")) == stored


def test_an_answer_without_the_days_bucket_fails_the_day(fake, openai_source):
    fake.missing_days = {DAY}

    [result] = bills_pull(openai_source, today=TODAY)

    assert (result.ok, result.message) == (False, "the answer has no bucket for 2026-11-09")
    assert BillingDay.objects.get(day=DAY).status == "failed"


def test_a_bucket_without_its_day_fails_the_day(fake, anthropic_source):
    fake.anthropic[DAY] = [anthropic_result("Claude", "100", model="claude-x")]
    fake.bucket_edit = lambda bucket: {name: value for name, value in bucket.items() if name != "starting_at"}

    [result] = bills_pull(anthropic_source, today=TODAY)

    assert (result.ok, result.message) == (False, "page 1, bucket 1: starting_at None is missing or not a time")
    assert not BilledCost.objects.exists()


def test_the_same_day_read_again_changes_nothing(fake, openai_source):
    fake.openai[DAY] = five_openai_lines()
    bills_pull(openai_source, today=TODAY)
    before = list(BilledCost.objects.order_by("id").values_list("id", "imported_at", "amount"))
    imported_at = BillingDay.objects.get(day=DAY).imported_at

    [result] = bills_pull(openai_source, today=TODAY)

    assert (result.ok, result.changed) == (True, False)
    assert str(result) == "OpenAI org 2026-11-09: unchanged, 5 line(s)"
    assert list(BilledCost.objects.order_by("id").values_list("id", "imported_at", "amount")) == before
    day = BillingDay.objects.get(day=DAY)
    assert day.imported_at == imported_at and day.attempted_at > imported_at


def test_a_day_whose_lines_changed_is_replaced_whole(fake, openai_source):
    openai_source.days_back = 2
    openai_source.save()
    other = DAY - timedelta(days=1)
    fake.openai[DAY] = five_openai_lines()
    fake.openai[other] = [openai_result("gpt-4o-2024-08-06, input", 3)]
    bills_pull(openai_source, today=TODAY)
    kept = list(BilledCost.objects.filter(day=other).values_list("id", flat=True))
    fake.openai[DAY] = [openai_result("gpt-4o-2024-08-06, input", 1.5), openai_result("gpt-4.1, output", 4)]

    results = bills_pull(openai_source, today=TODAY)

    assert [(r.day, r.changed) for r in results] == [(other, False), (DAY, True)]
    assert lines(openai_source) == [
        ("gpt-4.1", "proj_abc", "gpt-4.1, output", "USD", Decimal("4")),
        ("gpt-4o-2024-08-06", "proj_abc", "gpt-4o-2024-08-06, input", "USD", Decimal("1.5")),
    ]
    assert list(BilledCost.objects.filter(day=other).values_list("id", flat=True)) == kept
    assert BillingDay.objects.get(day=DAY).lines == 2


# --- the admin key ----------------------------------------------------------------------------------


def test_the_admin_key_is_stored_encrypted(openai_source):
    with connection.cursor() as cursor:
        cursor.execute("SELECT admin_key_encrypted FROM tracking_billingsource WHERE id = %s", [openai_source.pk])
        [stored] = cursor.fetchone()
    assert stored and OPENAI_KEY not in stored
    assert billing_key(BillingSource.objects.get(pk=openai_source.pk)) == OPENAI_KEY


def test_the_admin_key_file_is_read_at_each_pull(fake, openai_source, tmp_path):
    secret = tmp_path / "openai_admin_key"
    secret.write_text("wrong-key\n")
    openai_source.admin_key_file = str(secret)
    openai_source.save()
    fake.openai[DAY] = five_openai_lines()

    [refused] = bills_pull(openai_source, today=TODAY)
    secret.write_text(f"  {OPENAI_KEY}\n")
    [accepted] = bills_pull(openai_source, today=TODAY)

    assert refused.message == "page 1: HTTP 401: Invalid authorization header"
    assert accepted.ok and accepted.lines == 5
    secret.unlink()
    assert "cannot be read" in bills_pull(openai_source, today=TODAY)[0].message


def test_without_a_key_the_days_fail_with_a_clear_message():
    source = BillingSource.objects.create(name="no key", kind="anthropic", provider="anthropic", days_back=1)

    [result] = bills_pull(source, today=TODAY)

    assert result.message == "no admin key: enter one on the billing source, or name an admin key file"


def test_the_key_is_never_shown_in_the_admin(fake, openai_source):
    client = superuser_client()
    change = reverse("admin:tracking_billingsource_change", args=[openai_source.pk])
    data = {
        "name": "OpenAI org",
        "kind": "openai",
        "provider": "openai",
        "api_url": fake.base,
        "admin_key_file": "",
        "enabled": "on",
        "days_back": "2",
        "admin_key": "sk-admin-new-key-abcdef",
    }
    assert client.post(change, data).status_code == 302
    openai_source.refresh_from_db()
    assert billing_key(openai_source) == "sk-admin-new-key-abcdef"
    pages = [
        client.get(reverse("admin:tracking_billingsource_changelist")),
        client.get(change),
        client.get(reverse("admin:tracking_billingsource_add")),
    ]
    for page in pages:
        assert page.status_code == 200
        assert "sk-admin-new-key-abcdef" not in page.text and OPENAI_KEY not in page.text
        assert openai_source.admin_key_encrypted not in page.text
    assert "a key is stored" in pages[1].text

    # Saved again without a key: the stored one is kept; "forget" clears it (and a cost API then needs one).
    assert client.post(change, {**data, "admin_key": ""}).status_code == 302
    openai_source.refresh_from_db()
    assert billing_key(openai_source) == "sk-admin-new-key-abcdef"
    refused = client.post(change, {**data, "admin_key": "", "clear_admin_key": "on"})
    assert refused.status_code == 200 and "A cost API needs an admin key" in refused.text
    forget = {**data, "admin_key": "", "clear_admin_key": "on", "kind": "csv"}
    assert client.post(change, forget).status_code == 302
    openai_source.refresh_from_db()
    assert openai_source.admin_key_encrypted == ""


def test_pull_now_in_the_admin_reports_each_source(fake, openai_source):
    fake.openai[DAY] = five_openai_lines()
    client = superuser_client()
    changelist = reverse("admin:tracking_billingsource_changelist")

    response = client.post(changelist, {"action": "pull_now", "_selected_action": [openai_source.pk]}, follow=True)

    assert response.status_code == 200
    assert "OpenAI org: 1 day(s) read, " in response.text
    openai_source.refresh_from_db()
    assert openai_source.last_success_at is not None


# --- CSV --------------------------------------------------------------------------------------------


@pytest.fixture
def csv_source() -> BillingSource:
    return BillingSource.objects.create(name="Mistral invoices", kind="csv", provider="mistral")


GOOD_CSV = (
    "day,model,amount,currency,account,description\n"
    "2026-11-01,mistral-large,12.50,EUR,prod,Mistral Large tokens\n"
    "2026-11-01,mistral-small,0.000000125,EUR,prod,\n"
    "\n"
    "2026-11-02,mistral-large,3,eur,,\n"
)


def test_a_csv_file_is_imported_per_day_and_again_changes_nothing(csv_source):
    results = bills_import_csv(csv_source, io.BytesIO(GOOD_CSV.encode()), today=TODAY)

    assert [(r.day, r.lines, r.changed) for r in results] == [
        (date(2026, 11, 1), 2, True),
        (date(2026, 11, 2), 1, True),
    ]
    assert lines(csv_source, date(2026, 11, 1)) == [
        ("mistral-large", "prod", "Mistral Large tokens", "EUR", Decimal("12.5")),
        ("mistral-small", "prod", "", "EUR", Decimal("0.000000125")),
    ]
    ids = list(BilledCost.objects.order_by("id").values_list("id", "imported_at"))
    again = bills_import_csv(csv_source, io.BytesIO(GOOD_CSV.encode()), today=TODAY)
    assert [r.changed for r in again] == [False, False]
    assert list(BilledCost.objects.order_by("id").values_list("id", "imported_at")) == ids

    # A corrected invoice for 2026-11-02 replaces that day whole; 2026-11-01 is not in the file and stays.
    bills_import_csv(
        csv_source, io.StringIO("day,model,amount,currency\n2026-11-02,mistral-large,2.75,EUR\n"), today=TODAY
    )
    assert lines(csv_source, date(2026, 11, 2)) == [("mistral-large", "", "", "EUR", Decimal("2.75"))]
    assert len(lines(csv_source, date(2026, 11, 1))) == 2


def test_a_bad_csv_file_imports_nothing_and_names_each_line_and_column(csv_source):
    bad = (
        "day,model,amount,currency\n"
        "2026-11-01,gpt-4o,1.00,USD\n"
        "2026-11-01,gpt-4o,abc,USD\n"
        "2026-13-01,gpt-4o,-2,XYZ\n"
        f"{TODAY},gpt-4o,1,USD\n"
    )
    with pytest.raises(BillingError) as refused:
        bills_import_csv(csv_source, io.BytesIO(bad.encode()), today=TODAY)

    assert str(refused.value) == (
        "line 3, column amount: 'abc' is not an amount (a number with at most 9 decimal places); "
        "line 4, column day: '2026-13-01' is not a date (YYYY-MM-DD); "
        "line 4, column amount: -2 is negative (credits and refunds are not imported); "
        "line 4, column currency: unknown currency 'XYZ' (expected an ISO 4217 code such as USD); "
        "line 5, column day: 2026-11-10 is not over yet (UTC): only closed days are imported"
    )
    assert not BilledCost.objects.exists() and not BillingDay.objects.exists()
    csv_source.refresh_from_db()
    assert csv_source.last_error == str(refused.value)

    with pytest.raises(BillingError, match="line 1: missing column\\(s\\) currency; unknown column\\(s\\) cost"):
        bills_import_csv(csv_source, io.StringIO("day,model,amount,cost\n"), today=TODAY)


def test_the_csv_upload_page_imports_a_file(csv_source):
    client = superuser_client()
    change = client.get(reverse("admin:tracking_billingsource_change", args=[csv_source.pk]))
    upload = reverse("admin:tracking_billingsource_upload", args=[csv_source.pk])
    assert upload in change.text
    assert client.get(upload).status_code == 200

    refused = client.post(upload, {"file": _upload("day,model,amount,currency\n2026-11-01,m,x,USD\n")})
    assert refused.status_code == 400 and "line 2, column amount" in refused.text
    done = client.post(upload, {"file": _upload(GOOD_CSV)}, follow=True)
    assert "3 line(s) over 2 day(s); 2 day(s) replaced, 0 unchanged." in done.text
    assert BilledCost.objects.count() == 3


def _upload(text: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("invoice.csv", text.encode(), content_type="text/csv")


# --- who sees it ------------------------------------------------------------------------------------


def test_billing_pages_are_for_superusers_only(fake, openai_source):
    fake.openai[DAY] = five_openai_lines()
    bills_pull(openai_source, today=TODAY)
    superuser = superuser_client()
    _, staff = staff_client("ana", [TeamFactory(name="ml")])  # every model permission there is
    pages = [
        reverse("admin:tracking_billingsource_changelist"),
        reverse("admin:tracking_billingsource_change", args=[openai_source.pk]),
        reverse("admin:tracking_billingday_changelist"),
        reverse("admin:tracking_billedcost_changelist"),
        reverse("admin:tracking_billedcost_changelist") + f"?source__id__exact={openai_source.pk}&provider=openai",
    ]
    for page in pages:
        assert superuser.get(page).status_code == 200, page
        assert staff.get(page).status_code == 403, page
    assert "gpt-4o-2024-08-06, input" in superuser.get(pages[3]).text
    assert "1.25 USD" in superuser.get(pages[3]).text
    assert "Billing sources" in superuser.get(reverse("admin:index")).text
    assert "Billing sources" not in staff.get(reverse("admin:index")).text


# --- the beat task and the command ------------------------------------------------------------------


def test_one_failing_source_does_not_stop_the_others(fake, openai_source, anthropic_source):
    fake.anthropic[DAY] = [anthropic_result("Claude", "100", model="claude-x")]
    openai_source.api_url = "http://127.0.0.1:9"
    openai_source.save()
    BillingSource.objects.create(name="invoices", kind="csv", provider="mistral")  # never pulled

    done = bills_pull_enabled(today=TODAY)

    assert [(source.name, [r.ok for r in results]) for source, results in done] == [
        ("Anthropic org", [True]),
        ("OpenAI org", [False]),
    ]
    assert lines(anthropic_source) == [("claude-x", "wrkspc_01", "Claude", "USD", Decimal("1"))]


def test_the_beat_entry_pulls_daily():
    from costcontrol.schedule import SCHEDULE

    [entry] = [item for item in SCHEDULE if item.task == "tracking.bills_pull"]
    assert entry.crontab == {"minute": "0", "hour": "6"}
    from tracking.tasks import bills_pull as task

    assert task.name == "tracking.bills_pull"


def test_the_command_prints_a_line_per_day(fake, openai_source, anthropic_source):
    fake.openai[DAY] = five_openai_lines()
    fake.openai[DAY - timedelta(days=1)] = [openai_result("gpt-4o, input", 1)]
    fake.anthropic[DAY] = [anthropic_result("Claude", "100", model="claude-x", currency="XXX")]
    out = io.StringIO()

    with time_machine.travel(datetime(2026, 11, 10, 12, tzinfo=UTC), tick=False):
        with pytest.raises(CommandError, match="1 day\\(s\\) failed"):
            call_command("pull_bills", "--days", "2", stdout=out)

    printed = out.getvalue().splitlines()
    assert len(printed) == 4
    assert any(line.startswith("OpenAI org ") and line.endswith(": imported, 5 line(s)") for line in printed)
    assert any(
        "Anthropic org" in line and "failed: page 1, bucket 1, result 1: unknown currency 'XXX'" in line
        for line in printed
    )

    out = io.StringIO()
    with time_machine.travel(datetime(2026, 11, 10, 12, tzinfo=UTC), tick=False):
        call_command("pull_bills", "--source", "OpenAI org", "--days", "2", stdout=out)
    assert out.getvalue().count("unchanged") == 2
    with pytest.raises(CommandError, match="no billing source is named 'nope'"):
        call_command("pull_bills", "--source", "nope")
