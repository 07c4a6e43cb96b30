"""The tracking admin: a UI over the services. Prices are versioned, the ledger is append-only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import PriceFactory, TeamFactory
from tracking.admin import EstimatedCountPaginator
from tracking.models import CostEntry, Price, SpendRollup
from tracking.provenance import ProvenanceLine, price_words, provenance_lines
from tracking.selectors import ledger_differences
from tracking.services import cost_entry_correct, cost_entry_record

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:tracking_costentry_changelist"


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def team(admin_user):
    team = TeamFactory(name="ml")
    team.members.add(admin_user)
    return team


@pytest.fixture
def entry(gpt4o_prices, team):
    return cost_entry_record(
        provider="openai",
        model="gpt-4o",
        input_tokens=1000,
        output_tokens=500,
        service="api",
        subject="user-42",
        team="ml",
        tags={"feature": "chat"},
    ).entry


@pytest.fixture
def other_entry(gpt4o_prices):
    return cost_entry_record(provider="openai", model="gpt-4o", input_tokens=2000, service="batch").entry


def correction_form(client, entry: CostEntry) -> str:
    """Open the action's intermediate page for one entry and return its form token."""
    response = client.post(reverse(CHANGELIST), {"action": "correct_amount", "_selected_action": [entry.pk]})
    assert response.status_code == 200
    return re.search(r'name="token" value="([0-9a-f]{32})"', response.content.decode()).group(1)


def apply_correction(client, entry: CostEntry, *, amount: str, note: str = "invoice", token: str | None = None):
    return client.post(
        reverse(CHANGELIST),
        {
            "action": "correct_amount",
            "_selected_action": [entry.pk],
            "apply": "yes",
            "amount": amount,
            "note": note,
            "token": token or correction_form(client, entry),
        },
    )


# --- every page renders ---------------------------------------------------------------------


def test_every_tracking_list_and_page_renders_with_data(admin_client, entry, team):
    correction = cost_entry_correct(entry=entry, amount="0.01", note="invoice").entry
    price = Price.objects.get(model="gpt-4o", unit="input_token")
    rollup = SpendRollup.objects.get(scope="global")
    urls = [
        reverse("admin:core_team_changelist"),
        reverse("admin:core_team_change", args=[team.pk]),
        reverse("admin:core_team_add"),
        reverse("admin:tracking_price_changelist"),
        reverse("admin:tracking_price_changelist") + "?in_force=yes&provider=openai&unit=input_token",
        reverse("admin:tracking_price_changelist") + "?in_force=no",
        reverse("admin:tracking_price_change", args=[price.pk]),
        reverse("admin:tracking_price_add"),
        reverse(CHANGELIST),
        reverse(CHANGELIST) + "?provider=openai&pricing_status__exact=priced&is_estimate__exact=1&q=gpt",
        reverse("admin:tracking_costentry_change", args=[entry.pk]),
        reverse("admin:tracking_costentry_change", args=[correction.pk]),
        reverse("admin:tracking_spendrollup_changelist"),
        reverse("admin:tracking_spendrollup_changelist") + "?currency=USD&q=service",
        reverse("admin:tracking_spendrollup_change", args=[rollup.pk]),
    ]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url


def test_the_team_list_shows_member_counts(admin_client, team):
    response = admin_client.get(reverse("admin:core_team_changelist"))

    assert response.status_code == 200
    assert re.search(r'<td class="field-member_count">1</td>', response.content.decode())


def test_the_ledger_list_shows_amounts_with_their_currency_and_links_corrections(admin_client, entry):
    cost_entry_correct(entry=entry, amount="0.01", note="invoice")

    content = admin_client.get(reverse(CHANGELIST)).content.decode()

    assert "0.0075 USD" in content
    assert "0.0025 USD" in content  # the correction's delta
    corrects_column = re.search(r'<td class="field-corrects_link">(.*?)</td>', content).group(1)
    assert corrects_column == f'<a href="{reverse("admin:tracking_costentry_change", args=[entry.pk])}">#{entry.pk}</a>'


def test_the_provider_filter_offers_catalog_providers(admin_client, entry):
    PriceFactory(provider="anthropic", model="claude")

    response = admin_client.get(reverse(CHANGELIST) + "?provider=anthropic")

    assert response.status_code == 200
    assert "?provider=anthropic" in response.content.decode()
    assert list(response.context["cl"].result_list) == []


# --- the ledger is append-only ----------------------------------------------------------------


def test_it_refuses_to_add_a_cost_entry(admin_client, gpt4o_prices):
    response = admin_client.get(reverse("admin:tracking_costentry_add"))

    assert response.status_code == 403
    assert 'href="/admin/tracking/costentry/add/"' not in admin_client.get(reverse(CHANGELIST)).content.decode()


def test_it_refuses_to_edit_a_cost_entry(admin_client, entry):
    response = admin_client.post(
        reverse("admin:tracking_costentry_change", args=[entry.pk]),
        {"amount": "99", "currency": "USD", "note": "edited", "_save": "Save"},
    )

    assert response.status_code == 403
    stored = CostEntry.objects.get(pk=entry.pk)
    assert stored.amount == Decimal("0.0075")
    assert stored.note == ""
    assert CostEntry.objects.count() == 1


def test_the_change_page_of_an_entry_is_read_only(admin_client, entry):
    content = admin_client.get(reverse("admin:tracking_costentry_change", args=[entry.pk])).content.decode()

    assert 'name="_save"' not in content
    assert 'name="amount"' not in content
    assert "0.0075 USD" in content
    # How it was priced, in words (the entry predates quantities in prices_used: its own columns).
    assert "input tokens: 1,000 x 0.0000025 = 0.0025 USD" in content
    assert "output tokens: 500 x 0.00001 = 0.005 USD" in content
    # The prices used are a table: a row per part, then their total.
    assert re.search(r'<th scope="row">total</th>.*?<td class="cc-num" title="[^"]*">0.0075 USD</td>', content)
    # Only the quantities the call had, not 29 columns of mostly zeros.
    assert '<tr><td>input tokens</td><td style="text-align:right">1,000</td></tr>' in content
    assert "cache write tokens" not in content
    assert "&quot;input_token&quot;" not in content  # no raw JSON


def test_it_refuses_to_delete_a_cost_entry(admin_client, entry):
    delete_url = reverse("admin:tracking_costentry_delete", args=[entry.pk])

    assert admin_client.get(delete_url).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert CostEntry.objects.filter(pk=entry.pk).exists()


def test_rollups_cannot_be_added_edited_or_deleted(admin_client, entry):
    rollup = SpendRollup.objects.get(scope="global")

    assert admin_client.get(reverse("admin:tracking_spendrollup_add")).status_code == 403
    change = admin_client.post(reverse("admin:tracking_spendrollup_change", args=[rollup.pk]), {"amount": "5"})
    assert change.status_code == 403
    assert admin_client.post(reverse("admin:tracking_spendrollup_delete", args=[rollup.pk])).status_code == 403
    assert SpendRollup.objects.get(pk=rollup.pk).amount == Decimal("0.0075")


# --- correcting an entry --------------------------------------------------------------------


def test_the_correct_action_asks_for_the_corrected_total(admin_client, entry):
    response = admin_client.post(reverse(CHANGELIST), {"action": "correct_amount", "_selected_action": [entry.pk]})

    assert response.status_code == 200
    assert response.templates[0].name == "admin/tracking/costentry/correct.html"
    content = response.content.decode()
    assert "0.0075 USD" in content  # the current total
    assert 'name="amount"' in content
    assert 'name="note"' in content
    assert CostEntry.objects.count() == 1


def test_the_correct_action_appends_one_correcting_entry_and_keeps_rollups_consistent(admin_client, entry):
    response = apply_correction(admin_client, entry, amount="0.005", note="invoice says 0.005")

    assert response.status_code == 302
    correction = CostEntry.objects.get(corrects=entry)
    assert correction.amount == Decimal("-0.0025")
    assert correction.note == "invoice says 0.005"
    assert CostEntry.objects.get(pk=entry.pk).amount == Decimal("0.0075")
    assert messages_of(response) == [f"Entry #{entry.pk} corrected: new total 0.005 USD (correction #{correction.pk})."]
    assert SpendRollup.objects.get(scope="global").amount == Decimal("0.005")
    differences, ledger_rows, rollup_rows = ledger_differences()
    assert differences == []
    assert ledger_rows == rollup_rows


def test_a_resubmitted_correction_is_recorded_once(admin_client, entry):
    token = correction_form(admin_client, entry)

    apply_correction(admin_client, entry, amount="0.005", token=token)
    again = apply_correction(admin_client, entry, amount="0.005", token=token)

    assert CostEntry.objects.filter(corrects=entry).count() == 1
    assert "already recorded" in messages_of(again)[-1]


@pytest.mark.parametrize("amount", ["abc", "-1", "0.0000000001"])
def test_a_bad_corrected_amount_is_shown_and_writes_nothing(admin_client, entry, amount):
    response = apply_correction(admin_client, entry, amount=amount)

    assert response.status_code == 200  # the form again, with what was typed
    shown = messages_of(response)
    assert len(shown) == 1
    assert shown[0].startswith("Not corrected: amount:")
    assert f'value="{amount}"' in response.content.decode()
    assert CostEntry.objects.count() == 1
    assert SpendRollup.objects.get(scope="global").amount == Decimal("0.0075")


def test_a_correction_without_a_note_writes_nothing(admin_client, entry):
    response = apply_correction(admin_client, entry, amount="0.005", note="   ")

    assert response.status_code == 200
    assert CostEntry.objects.count() == 1


def test_it_corrects_exactly_one_entry_at_a_time(admin_client, entry, other_entry):
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "correct_amount", "_selected_action": [entry.pk, other_entry.pk], "apply": "yes", "amount": "1"},
    )

    assert response.status_code == 302
    assert messages_of(response) == ["Select exactly one entry to correct."]
    assert CostEntry.objects.count() == 2


def test_correcting_a_correction_corrects_the_original(admin_client, entry):
    first = cost_entry_correct(entry=entry, amount="0.005", note="first").entry

    response = apply_correction(admin_client, first, amount="0.001", note="second")

    assert response.status_code == 302
    assert CostEntry.objects.filter(corrects=entry).count() == 2
    assert messages_of(response)[0].startswith(f"Entry #{entry.pk} corrected: new total 0.001 USD")


def test_only_users_allowed_to_change_entries_may_correct_them(client, entry):
    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_costentry"))
    client.force_login(viewer)

    listing = client.get(reverse(CHANGELIST))
    response = client.post(
        reverse(CHANGELIST),
        {"action": "correct_amount", "_selected_action": [entry.pk], "apply": "yes", "amount": "1", "note": "x"},
    )

    assert listing.status_code == 200
    assert "correct_amount" not in listing.content.decode()
    assert response.status_code == 200  # "No action selected"
    assert CostEntry.objects.count() == 1


def test_the_change_page_of_an_entry_shows_its_corrections_and_current_total(admin_client, entry):
    first = cost_entry_correct(entry=entry, amount="0.005", note="invoice says 0.005").entry
    second = cost_entry_correct(entry=entry, amount="0.02", note="re-billed").entry

    content = admin_client.get(reverse("admin:tracking_costentry_change", args=[entry.pk])).content.decode()

    assert "0.02 USD" in content  # current total
    assert reverse("admin:tracking_costentry_change", args=[first.pk]) in content
    assert reverse("admin:tracking_costentry_change", args=[second.pk]) in content
    assert "-0.0025 USD" in content
    assert "+0.015 USD" in content
    assert "invoice says 0.005" in content


# --- prices -----------------------------------------------------------------------------------


@pytest.fixture
def versions(db):
    """Two versions of one price: the old one closed when the new one came in."""
    switch = datetime(2024, 6, 1, tzinfo=UTC)
    old = PriceFactory(
        provider="openai",
        model="gpt-4o-mini",
        unit="input_token",
        unit_price="0.0000002",
        valid_from=datetime(2024, 1, 1, tzinfo=UTC),
        valid_until=switch,
        source="launch",
    )
    new = PriceFactory(
        provider="openai",
        model="gpt-4o-mini",
        unit="input_token",
        unit_price="0.00000015",
        valid_from=switch,
        source="price cut",
    )
    return old, new


def test_the_price_list_shows_normalised_unit_prices_and_what_is_in_force(admin_client, versions):
    response = admin_client.get(reverse("admin:tracking_price_changelist") + "?in_force=yes")

    content = response.content.decode()
    assert "0.00000015" in content
    assert "0.0000002<" not in content  # the superseded version is filtered out
    assert list(response.context["cl"].result_list) == [versions[1]]


def test_the_price_history_table_appears_on_the_change_page(admin_client, versions):
    old, new = versions

    content = admin_client.get(reverse("admin:tracking_price_change", args=[new.pk])).content.decode()

    table = content[content.index('class="price-history"') :]
    table = table[: table.index("</table>")]
    assert table.index("0.00000015 USD") < table.index("0.0000002 USD")  # newest first
    assert "price cut" in table
    assert "launch" in table
    assert "2024-06-01 00:00" in table and "00:00:00" not in table  # the admin's one date format
    assert reverse("admin:tracking_price_change", args=[old.pk]) in table


def test_a_superseded_price_cannot_be_edited(admin_client, versions):
    old, _ = versions

    content = admin_client.get(reverse("admin:tracking_price_change", args=[old.pk])).content.decode()

    assert 'name="unit_price"' not in content
    assert 'name="source"' in content


def test_editing_only_the_source_saves_it_in_place(admin_client, versions):
    _, new = versions

    response = admin_client.post(
        reverse("admin:tracking_price_change", args=[new.pk]),
        {"unit_price": "0.00000015", "currency": "USD", "source": "openai.com/pricing", "_save": "Save"},
    )

    assert response.status_code == 302
    assert Price.objects.filter(model="gpt-4o-mini").count() == 2
    stored = Price.objects.get(pk=new.pk)
    assert stored.source == "openai.com/pricing"
    assert stored.unit_price == Decimal("0.00000015")


def test_prices_cannot_be_deleted(admin_client, versions):
    _, new = versions

    assert admin_client.post(reverse("admin:tracking_price_delete", args=[new.pk]), {"post": "yes"}).status_code == 403
    assert Price.objects.filter(pk=new.pk).exists()


def test_changing_a_unit_price_keeps_the_old_version(admin_client, versions):
    _, current = versions
    before = datetime.now(UTC)

    response = admin_client.post(
        reverse("admin:tracking_price_change", args=[current.pk]),
        {"unit_price": "0.0000001", "currency": "USD", "source": current.source, "_save": "Save"},
    )

    assert response.status_code == 302
    rows = list(Price.objects.filter(model="gpt-4o-mini", unit="input_token").order_by("valid_from"))
    assert len(rows) == 3
    closed, replaced = rows[1], rows[2]
    assert closed.pk == current.pk
    assert closed.unit_price == Decimal("0.00000015")  # not overwritten
    assert closed.valid_until == replaced.valid_from
    assert replaced.unit_price == Decimal("0.0000001")
    assert replaced.valid_until is None
    assert replaced.valid_from >= before - timedelta(seconds=1)
    assert replaced.source == "admin: admin"
    [message] = messages_of(response)
    assert message.startswith("Price changed: new version from ")
    assert message.endswith("the previous version is kept in the history.")


def test_adding_a_price_goes_through_the_catalog(admin_client, versions):
    response = admin_client.post(
        reverse("admin:tracking_price_add"),
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "operation": "chat",
            "unit": "input_token",
            "variant": "",
            "unit_price": "0.0000001",
            "currency": "USD",
            "valid_from_0": "2025-01-01",
            "valid_from_1": "00:00:00",
            "source": "",
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    rows = list(Price.objects.filter(model="gpt-4o-mini", unit="input_token").order_by("valid_from"))
    assert [r.unit_price for r in rows] == [Decimal("0.0000002"), Decimal("0.00000015"), Decimal("0.0000001")]
    assert rows[1].valid_until == rows[2].valid_from  # the version in force was closed, not overwritten
    assert rows[2].valid_until is None
    assert rows[2].source == "admin: admin"


def test_adding_the_price_already_in_force_adds_nothing(admin_client, versions):
    _, current = versions

    response = admin_client.post(
        reverse("admin:tracking_price_add"),
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "operation": "chat",
            "unit": "input_token",
            "unit_price": "0.00000015",
            "currency": "USD",
            "valid_from_0": "2025-01-01",
            "valid_from_1": "00:00:00",
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:tracking_price_change", args=[current.pk])
    assert messages_of(response)[0].startswith("Nothing changed:")
    assert Price.objects.filter(model="gpt-4o-mini").count() == 2


def test_changing_a_price_and_continuing_opens_the_new_version(admin_client, versions):
    _, current = versions

    response = admin_client.post(
        reverse("admin:tracking_price_change", args=[current.pk]),
        {"unit_price": "0.0000001", "currency": "USD", "source": current.source, "_continue": "Save"},
    )

    replaced = Price.objects.get(model="gpt-4o-mini", valid_until__isnull=True)
    assert replaced.pk != current.pk
    assert response["Location"] == reverse("admin:tracking_price_change", args=[replaced.pk])


def test_a_price_the_catalog_refuses_is_reported_and_nothing_is_written(admin_client):
    # A version that starts in the future cannot be replaced from now: the catalog says so.
    scheduled = PriceFactory(model="gpt-5", unit_price="0.000001", valid_from=datetime.now(UTC) + timedelta(days=7))

    response = admin_client.post(
        reverse("admin:tracking_price_change", args=[scheduled.pk]),
        {"unit_price": "0.000002", "currency": "USD", "source": "test", "_save": "Save"},
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:tracking_price_change", args=[scheduled.pk])
    [message] = messages_of(response)
    assert message.startswith("Price not saved: valid_from: must be later than")
    assert list(Price.objects.filter(model="gpt-5").values_list("unit_price", "valid_until")) == [
        (Decimal("0.000001"), None)
    ]


def test_a_negative_unit_price_is_refused_by_the_form(admin_client, versions):
    _, current = versions

    response = admin_client.post(
        reverse("admin:tracking_price_change", args=[current.pk]),
        {"unit_price": "-1", "currency": "USD", "source": current.source, "_save": "Save"},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert Price.objects.filter(model="gpt-4o-mini").count() == 2


# --- large tables ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_unfiltered_ledger_list_is_not_counted_with_a_full_scan(admin_client, entry, other_entry, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "exact_below", 1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tracking_costentry")

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    assert response.context["cl"].result_count == 2
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "tracking_costentry" in q["sql"]]
    assert counts == []


# --- prices a person reads -------------------------------------------------------------------


@pytest.fixture
def tiered(db):
    """gemini-2.5-pro-like prices: a context tier above 200k tokens, a priority tier, a batch tier."""
    since = datetime(2025, 1, 1, tzinfo=UTC)

    def price(unit: str, unit_price: str, **extra):
        return PriceFactory(
            provider="gemini", model="gemini-2.5-pro", unit=unit, unit_price=unit_price, valid_from=since, **extra
        )

    return {
        "input": price("input_token", "0.00000125"),
        "input_200k": price("input_token", "0.0000025", above_tokens=200_000),
        "input_priority": price("input_token", "0.00000225", service_tier="priority"),
        "input_200k_priority": price("input_token", "0.0000045", above_tokens=200_000, service_tier="priority"),
        "input_batch": price("input_token", "0.000000625", service_tier="batch"),
        "output": price("output_token", "0.00001"),
        "search": price("web_search", "0.035", variant="medium"),
        "image": price("image", "0.04"),
    }


def test_the_price_list_reads_token_prices_per_million_and_other_units_per_unit(admin_client, tiered):
    response = admin_client.get(reverse("admin:tracking_price_changelist") + "?provider=gemini")

    content = response.content.decode()
    assert "1.25 USD / 1M input tokens" in content
    assert "10.00 USD / 1M output tokens" in content
    assert "0.04 USD / image" in content
    assert "0.035 USD / web search query" in content
    assert 'title="0.00000125 USD per input token"' in content  # the exact unit price on hover


def test_the_price_list_shows_and_filters_service_and_context_tiers(admin_client, tiered):
    changelist = reverse("admin:tracking_price_changelist")

    content = admin_client.get(changelist).content.decode()
    assert "above 200k tokens" in content
    assert "any prompt size" in content
    assert ">priority<" in content
    priority = admin_client.get(changelist + "?service_tier=priority").context["cl"].result_list
    assert set(priority) == {tiered["input_priority"], tiered["input_200k_priority"]}
    standard = admin_client.get(changelist + "?service_tier=standard&above_tokens=200000").context["cl"].result_list
    assert list(standard) == [tiered["input_200k"]]


def rules_page(client, provider: str = "gemini", model: str = "gemini-2.5-pro"):
    return client.get(reverse("admin:tracking_price_rules") + f"?provider={provider}&model={model}")


def table_rows(content: str) -> list[list[str]]:
    """The rules table as text: one list of cell texts per row, header first."""
    table = content[content.index('class="price-rules"') :]
    table = table[: table.index("</table>")]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)
    ]


def test_a_price_row_links_to_all_rules_of_its_model(admin_client, tiered):
    content = admin_client.get(reverse("admin:tracking_price_change", args=[tiered["input"].pk])).content.decode()

    url = reverse("admin:tracking_price_rules") + "?provider=gemini&amp;model=gemini-2.5-pro"
    assert f'<a href="{url}">all rules of gemini/gemini-2.5-pro</a>' in content
    assert url in admin_client.get(reverse("admin:tracking_price_changelist")).content.decode()


def test_the_model_page_lists_every_rule_side_by_side_by_service_tier(admin_client, tiered):
    response = rules_page(admin_client)

    assert response.status_code == 200
    assert table_rows(response.content.decode()) == [
        ["what is billed", "per", "standard", "batch", "flex", "priority"],
        ["input tokens", "1M tokens", "1.25 USD", "0.625 USD", "-", "2.25 USD"],
        ["input tokens, above 200k tokens", "1M tokens", "2.50 USD", "-", "-", "4.50 USD"],
        ["output tokens", "1M tokens", "10.00 USD", "-", "-", "-"],
        ["images", "image", "0.04 USD", "-", "-", "-"],
        ["web search queries, medium", "web search query", "0.035 USD", "-", "-", "-"],
    ]
    content = re.sub(r"\s+", " ", response.content.decode())
    assert "gemini-2.5-pro has no flex prices: calls served at that tier are stored unpriced" in content
    assert reverse("admin:tracking_price_change", args=[tiered["input_200k_priority"].pk]) in content


def test_the_model_page_shows_only_prices_in_force(admin_client, versions):
    content = rules_page(admin_client, "openai", "gpt-4o-mini").content.decode()

    assert table_rows(content)[1:] == [["input tokens", "1M tokens", "0.15 USD", "-", "-", "-"]]
    assert "0.20 USD" not in content  # the superseded version
    assert "gpt-4o-mini has no batch, flex or priority prices" in re.sub(r"\s+", " ", content)
    assert "A context tier" not in content  # it has none


def test_the_model_page_of_a_model_without_prices_says_so(admin_client, db):
    content = rules_page(admin_client, "openai", "no-such-model").content.decode()

    assert "No price of openai/no-such-model is in force now." in content


def test_the_model_page_needs_a_model(admin_client, db):
    assert admin_client.get(reverse("admin:tracking_price_rules")).status_code == 404


def entry_showing(prices_used: dict, *, pricing_status: str = "priced", **quantities) -> CostEntry:
    """A ledger entry of gemini-2.5-pro carrying this provenance."""
    return CostEntry.objects.create(
        occurred_at=datetime(2025, 6, 1, tzinfo=UTC),
        provider="gemini",
        model="gemini-2.5-pro",
        amount=Decimal("1.35") if pricing_status == "priced" else Decimal(0),
        pricing_status=pricing_status,
        prices_used=prices_used,
        idempotency_key=f"provenance-{CostEntry.objects.count()}",
        **quantities,
    )


def how_it_was_priced(client, entry: CostEntry) -> str:
    content = client.get(reverse("admin:tracking_costentry_change", args=[entry.pk])).content.decode()
    shown = content[content.index("How it was priced") :]
    return re.sub(r"\s+", " ", shown[: shown.index("</div>", shown.index('class="readonly"'))])


def test_a_cost_entry_says_which_rule_priced_each_part(admin_client, tiered):
    price = tiered["input_200k_priority"]
    # As tracking.pricing.Quote writes it (tier, quantity and exact amount per part).
    entry = entry_showing(
        {
            "input_token": {
                "price_id": price.pk,
                "unit_price": "0.0000045",
                "quantity": "300000",
                "amount": "1.35",
                "service_tier": "priority",
                "above_tokens": 200000,
                "valid_from": "2025-01-01T00:00:00+00:00",
            }
        },
        input_tokens=300_000,
        service_tier="priority",
    )

    shown = how_it_was_priced(admin_client, entry)

    price_url = reverse("admin:tracking_price_change", args=[price.pk])
    assert (
        '<td>input tokens, above 200k tokens, priority</td><td class="cc-num">300,000</td>'
        '<td>4.50 USD / 1M input tokens</td><td class="cc-num">1.35 USD</td>'
        f'<td><a href="{price_url}">price #{price.pk}</a></td>'
    ) in shown
    assert "&quot;" not in shown  # no raw JSON


def test_an_unpriced_cost_entry_shows_the_reason_the_quote_gave(admin_client, db):
    entry = entry_showing(
        {"missing_units": ["input_token"], "reason": "no flex price for openai/gpt-4o"},
        pricing_status="unpriced",
        input_tokens=10,
    )

    assert "no flex price for openai/gpt-4o" in how_it_was_priced(admin_client, entry)


def test_an_old_unpriced_cost_entry_names_the_units_without_a_price(admin_client, db):
    entry = entry_showing({"missing_units": ["input_audio_token"]}, pricing_status="unpriced", input_audio_tokens=10)

    assert "no price for input audio tokens of gemini/gemini-2.5-pro" in how_it_was_priced(admin_client, entry)


@pytest.mark.parametrize(
    ("unit", "unit_price", "shown"),
    [
        ("input_token", "0.0000025", "2.50 USD / 1M input tokens"),
        ("cached_input_token", "0.00000125", "1.25 USD / 1M cached input tokens (cache read)"),
        ("cache_write_1h_token", "0.000006", "6.00 USD / 1M cache write tokens (1-hour lifetime)"),
        ("output_character", "0.000015", "15.00 USD / 1M output characters"),
        ("image", "0.04", "0.04 USD / image"),
        ("web_search", "0.035", "0.035 USD / web search query"),
        ("second", "0.0001", "0.0001 USD / second"),
    ],
)
def test_a_unit_price_reads_per_million_tokens_or_per_unit(unit, unit_price, shown):
    assert price_words(Decimal(unit_price), "USD", unit) == shown


def test_provenance_of_seconds_keeps_their_fraction_and_rounds_the_part_to_the_ledger():
    entry = CostEntry(
        provider="openai",
        model="whisper-1",
        pricing_status="priced",
        prices_used={"second": {"price_id": 3, "unit_price": "0.0001", "quantity": "12.5", "amount": "0.00125"}},
    )

    assert provenance_lines(entry) == [ProvenanceLine("seconds: 12.5 x 0.0001 = 0.00125 USD", 3)]


def test_provenance_of_an_explicit_amount_says_it_was_given():
    entry = CostEntry(provider="openai", model="gpt-4o", pricing_status="explicit", prices_used={})

    assert provenance_lines(entry) == [
        ProvenanceLine("the amount was given with the event (not priced from the catalog)")
    ]


def test_a_tier_price_is_edited_like_any_other_as_a_new_version_of_its_own_tier(admin_client, tiered):
    current = tiered["input_200k_priority"]

    response = admin_client.post(
        reverse("admin:tracking_price_change", args=[current.pk]),
        {"unit_price": "0.000005", "currency": "USD", "source": current.source, "_save": "Save"},
    )

    assert response.status_code == 302
    versions = Price.objects.filter(model="gemini-2.5-pro", unit="input_token", service_tier="priority")
    replaced = versions.get(above_tokens=200_000, valid_until__isnull=True)
    assert replaced.unit_price == Decimal("0.000005")
    assert Price.objects.get(pk=current.pk).valid_until == replaced.valid_from  # closed, not overwritten
    # The other tiers of the unit keep their version in force.
    for name in ("input", "input_200k", "input_priority", "input_batch"):
        assert Price.objects.get(pk=tiered[name].pk).valid_until is None, name


def test_an_off_peak_price_keeps_its_windows_when_its_price_changes(admin_client, db):
    windows = [{"hours_utc": ["16:30-00:30"], "weekdays": [1, 2, 3, 4, 5, 6, 7], "weekday_timezone": "UTC"}]
    current = PriceFactory(
        provider="deepseek",
        model="deepseek-chat",
        unit="input_token",
        unit_price="0.00000014",
        service_tier="off_peak",
        off_peak_windows=windows,
        valid_from=datetime(2025, 1, 1, tzinfo=UTC),
    )

    admin_client.post(
        reverse("admin:tracking_price_change", args=[current.pk]),
        {"unit_price": "0.0000001", "currency": "USD", "source": "", "_save": "Save"},
    )

    replaced = Price.objects.get(model="deepseek-chat", valid_until__isnull=True)
    assert (replaced.service_tier, replaced.off_peak_windows, replaced.unit_price) == (
        "off_peak",
        windows,
        Decimal("0.0000001"),
    )


def test_adding_a_batch_price_above_a_context_tier_closes_only_that_tiers_version(admin_client, tiered):
    response = admin_client.post(
        reverse("admin:tracking_price_add"),
        {
            "provider": "gemini",
            "model": "gemini-2.5-pro",
            "operation": tiered["input_batch"].operation,
            "unit": "input_token",
            "variant": "",
            "service_tier": "batch",
            "above_tokens": "200000",
            "unit_price": "0.00000125",
            "currency": "USD",
            "valid_from_0": "2025-06-01",
            "valid_from_1": "00:00:00",
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    added = Price.objects.get(model="gemini-2.5-pro", service_tier="batch", above_tokens=200_000)
    assert (added.unit_price, added.valid_until) == (Decimal("0.00000125"), None)
    assert Price.objects.get(pk=tiered["input_batch"].pk).valid_until is None
