"""A cost the sender's own tool reported (LiteLLM's response_cost, a span's gen_ai.usage.cost.amount) is kept
on the entry beside ours, flagged where the two differ, and never used as the amount."""

from __future__ import annotations

import json
from decimal import Decimal
from html import unescape

import pytest
from django.core.exceptions import ValidationError

from api.keys import api_key_issue
from tests.admin_clients import superuser_client
from tracking.models import CostEntry, PricingStatus, SpendRollup
from tracking.services import IdempotencyConflict, cost_entry_record, reported_cost_differs

pytestmark = pytest.mark.django_db

USAGE = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200}  # 0.0045 USD


def test_the_amount_is_ours_and_the_reported_cost_sits_beside_it(gpt4o_prices):
    agrees = cost_entry_record(**USAGE, reported_amount="0.0045", reported_by="litellm").entry
    differs = cost_entry_record(**USAGE, reported_amount="0.0099", reported_by="litellm").entry
    none = cost_entry_record(**USAGE).entry

    assert {agrees.amount, differs.amount, none.amount} == {Decimal("0.0045")}
    assert (agrees.reported_amount, agrees.reported_by, agrees.reported_differs) == (
        Decimal("0.0045"),
        "litellm",
        False,
    )
    assert (differs.reported_amount, differs.reported_differs) == (Decimal("0.0099"), True)
    assert (none.reported_amount, none.reported_by, none.reported_differs) == (None, "", None)
    # The rollups count our amount only.
    assert SpendRollup.objects.get(scope="global").amount == Decimal("0.0135")


@pytest.mark.parametrize(
    ("amount", "reported", "differs"),
    [
        ("0.0045", "0.0045", False),
        ("0.0045", "0.004545", False),  # 1 % of ours: within the tolerance
        ("0.0045", "0.004546", True),  # just over it
        ("0.00001", "0.0000105", False),  # 5 % but half a millionth: another tool's float rounding
        ("0", "0.002", True),  # unpriced here, priced there: worth a look
        ("0", "0", False),
        ("0.0045", None, None),
    ],
)
def test_differs_means_more_than_the_tolerance_of_ours_and_more_than_a_millionth(amount, reported, differs):
    assert reported_cost_differs(Decimal(amount), None if reported is None else Decimal(reported)) is differs


def test_the_tolerance_is_a_setting(gpt4o_prices, settings):
    settings.REPORTED_COST_TOLERANCE_PERCENT = Decimal("50")
    assert cost_entry_record(**USAGE, reported_amount="0.006").entry.reported_differs is False


def test_an_unpriced_call_with_a_reported_cost_is_flagged(gpt4o_prices):
    entry = cost_entry_record(
        provider="openai", model="gpt-9", input_tokens=10, reported_amount="0.002", reported_by="litellm"
    ).entry
    assert entry.pricing_status == PricingStatus.UNPRICED and entry.amount == 0 and entry.reported_differs is True


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"reported_amount": "-0.01"}, "reported_amount", "must not be negative"),
        ({"reported_amount": "abc"}, "reported_amount", "number"),
        ({"reported_amount": "0.0000000001"}, "reported_amount", "decimal places"),
        ({"reported_by": "litellm"}, "reported_by", "without a reported_amount"),
        ({"reported_amount": "1", "reported_by": "x" * 51}, "reported_by", "50"),
    ],
)
def test_a_bad_reported_cost_is_refused_naming_the_field_and_nothing_is_written(gpt4o_prices, extra, field, words):
    with pytest.raises(ValidationError) as raised:
        cost_entry_record(**USAGE, **extra)
    assert field in raised.value.message_dict and words in " ".join(raised.value.message_dict[field])
    assert not CostEntry.objects.exists()


def test_a_repeat_with_another_reported_cost_is_a_conflict_not_a_second_entry(gpt4o_prices):
    cost_entry_record(**USAGE, reported_amount="0.0045", idempotency_key="k1")
    assert cost_entry_record(**USAGE, reported_amount="0.0045", idempotency_key="k1").created is False
    with pytest.raises(IdempotencyConflict):
        cost_entry_record(**USAGE, reported_amount="0.005", idempotency_key="k1")
    assert CostEntry.objects.count() == 1


def test_the_api_takes_a_reported_cost_and_refuses_a_bad_one_naming_it(client, gpt4o_prices):
    issued = api_key_issue(name="proxy", service="gateway")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {issued.plaintext}"}

    def post(**extra):
        body = json.dumps({**USAGE, **extra})
        return client.post("/api/v1/events", data=body, content_type="application/json", **headers)

    assert post(reported_amount="0.0099", reported_by="litellm").status_code == 201
    entry = CostEntry.objects.get()
    assert (entry.amount, entry.reported_amount, entry.reported_by, entry.reported_differs) == (
        Decimal("0.0045"),
        Decimal("0.0099"),
        "litellm",
        True,
    )
    for extra, field in (
        ({"reported_amount": "-1"}, "reported_amount"),
        ({"reported_amount": "0.0000000001"}, "reported_amount"),
    ):
        response = post(**extra)
        assert response.status_code == 422, response.content
        assert field in response.json()["errors"]
    assert CostEntry.objects.count() == 1


def test_the_entry_list_flags_a_difference_and_filters_by_it_and_the_page_explains_it(gpt4o_prices):
    differs = cost_entry_record(**USAGE, reported_amount="0.0099", reported_by="litellm").entry
    agrees = cost_entry_record(**USAGE, reported_amount="0.0045", reported_by="gen_ai.usage.cost.amount").entry
    cost_entry_record(**USAGE)
    admin = superuser_client()

    raw = admin.get("/admin/tracking/costentry/").content.decode()
    assert (
        '<div class="cc-sub cc-bad" style="text-align:right">litellm says 0.0099 USD</div>' in raw
    )  # markup, not text
    page = unescape(raw)
    assert "litellm says 0.0099 USD" in page and "gen_ai.usage.cost.amount says" not in page
    assert "reported cost" in page and "differs from ours" in page  # the filter
    listed = admin.get("/admin/tracking/costentry/?reported=differs")
    assert [e.pk for e in listed.context["cl"].result_list] == [differs.pk]
    assert [e.pk for e in admin.get("/admin/tracking/costentry/?reported=agrees").context["cl"].result_list] == [
        agrees.pk
    ]
    assert admin.get("/admin/tracking/costentry/?reported=none").context["cl"].result_count == 1

    detail = unescape(admin.get(f"/admin/tracking/costentry/{differs.pk}/change/").content.decode())
    assert "0.0099 USD by litellm" in detail and "differs from the amount by 0.0054 USD (+120.0% of ours)" in detail
    detail = unescape(admin.get(f"/admin/tracking/costentry/{agrees.pk}/change/").content.decode())
    assert "agrees with the amount" in detail
