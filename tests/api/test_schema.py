"""schemathesis against the generated OpenAPI schema, in process through the WSGI app, with every
check it has: no 5xx, every answer conforms to the schema (status codes, content type, headers,
body), schema-invalid requests are refused, schema-valid ones accepted, the key is not ignored.

Two checks meet the API's design and are narrowed, never switched off (see `_excluded`):
negative_data_rejection for the events inside a batch, positive_data_acceptance for business rules
that no JSON schema can state."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from costcontrol.wsgi import application
from tracking.events import QUANTITY_FIELDS

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)

# Schema-valid requests the server refuses with a 422 on purpose, per operation: (field, what its
# message says). Each depends on data or on two fields together, which JSON Schema cannot express:
# - a provider must be in the price catalog (data), a currency an ISO 4217 code the server knows;
# - an amount has at most 9 decimal places, seconds 6, GPU-hours 9, within the ledger column's range
#   (the decimal-string pattern allows an exponent, as str(Decimal) writes one, so neither the places
#   nor the maximum of a decimal *string* are in the schema; a JSON number's maximum is);
# - an event without usage carries no quantities; occurred_at is not in the future and fits the ledger;
#   its quantities cost no more than a ledger entry holds, at the price in force (data);
# - a reservation settles by an amount or a usage, not both or neither (two fields together), and a
#   usage settles only if the catalog prices it (data);
# - a spend window's end is after its start and at most ~3 years later (31 days by hour); grouping
#   by a dimension is answered for scope=global or team:NAME only;
# - a batch name or job has no spaces inside, a name no '/'; a provider, model or scope value is more than spaces
#   around it: the schema's patterns say so, but the regex engines of pydantic (Rust), Python and
#   JSON Schema validators disagree on what a space is (U+001C..U+001F, U+0085), so the services,
#   which strip with str.strip(), have the last word on those characters.
# A decimal quantity's places and range (see above); any quantity's cost within a ledger entry.
QUANTITY_LIMITS = tuple((field, "decimal places|less than|beyond a ledger entry") for field in QUANTITY_FIELDS)
BUSINESS_RULES: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("POST", "/api/v1/events"): (
        ("provider", "unknown provider|is required"),
        ("model", "is required"),
        ("currency", "unknown currency|without an amount"),  # a currency goes with an amount
        ("amount", "decimal places|less than or equal"),
        ("reported_by", "without a reported_amount"),  # as a currency goes with an amount
        ("reported_amount", "decimal places|less than or equal|must not be negative"),
        *QUANTITY_LIMITS,
        ("usage_unavailable", "carries no quantities"),
        ("occurred_at", "in the future"),
        ("occurred_at", "out of range"),
        ("__all__", "does not fit the ledger"),
    ),
    ("POST", "/api/v1/budgets/check"): (
        ("amount", "decimal places|less than or equal"),
        ("scope", "surrounding spaces|is required"),
    ),
    ("POST", "/api/v1/budgets/reserve"): (
        ("amount", "decimal places|less than or equal"),
        ("scopes", "surrounding spaces|is required"),
    ),
    ("POST", "/api/v1/reservations/{reservation_id}/settle"): (
        ("actual", "decimal places|less than or equal|give either"),
        ("usage", "price"),
        ("usage.provider", "is required"),
        ("usage.model", "is required"),
        *((f"usage.{field}", phrase) for field, phrase in QUANTITY_LIMITS),
    ),
    ("POST", "/api/v1/batches"): (
        ("name", "must not contain spaces|must not contain '/'|is required"),
        ("job", "must not contain spaces"),
    ),
    # a budget's scope and thresholds follow a grammar and an order no JSON schema states (the model
    # checks them: Budget.full_clean); a value of a template is one value, without '/' or surrounding spaces
    ("POST", "/api/v1/budgets"): (
        ("scope", "scope|template"),
        ("currency", "unknown currency"),
        ("thresholds", "strictly increasing|outside|non-empty|cannot be blank"),
        ("amount", "decimal places|less than or equal"),
        ("rollover_cap", "decimal places|less than or equal"),
        ("count_billed", "bills are per provider"),
    ),
    ("PUT", "/api/v1/budgets/{budget_id}/values/{value}"): (
        ("amount", "decimal places|less than or equal"),
        ("value", "a value is required"),
        ("scope", "scope|template"),
    ),
    ("GET", "/api/v1/spend"): (
        ("to", "must be after|a window covers at most|group_by=hour covers at most|out of range"),
        ("scope", "surrounding spaces|is required"),
        ("currency", "unknown currency"),
        ("from", "out of range"),
        ("group_by", "for scope=global or team:NAME only"),
    ),
}


# Every operation: a NUL character in a string (PostgreSQL's text columns cannot hold one, so the API
# refuses it on both databases; stating it would take a pattern on every string of the schema).
ANY_OPERATION_RULES = (("", "must not contain a NUL"),)


def _excluded(case, response) -> list:
    """The checks that do not apply to this one request (all others run)."""
    excluded = []
    body = case.body
    if (
        case.operation.path == "/api/v1/events"
        and isinstance(body, dict)
        and set(body) == {"events"}
        and isinstance(body["events"], list)
        and len(body["events"]) <= 1000
    ):
        # A batch is validated event by event so that one bad event does not lose the others: an
        # invalid event is a per-event rejection inside a 200 (tests/api/test_api.py checks it).
        excluded.append(negative_data_rejection)
    if response.status_code == 422:
        rules = BUSINESS_RULES.get((case.operation.method.upper(), case.operation.path), ())
        errors = response.json().get("errors") or {}
        if errors and all(
            any(field == rule_field and re.search(phrase, " ".join(messages)) for rule_field, phrase in rules)
            or any(re.search(phrase, " ".join(messages)) for _, phrase in ANY_OPERATION_RULES)
            for field, messages in errors.items()
        ):
            excluded.append(positive_data_acceptance)
    return excluded


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """The WSGI handler closes "old" connections at each request's start and end; inside the
    test's transaction that would close it (Django's test client disconnects the same hook)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def plaintext(db, gpt4o_prices):
    from api.keys import api_key_issue

    return api_key_issue(
        name="schemathesis", service="fuzz", rate_limit_per_minute=10**6, can_manage_budgets=True
    ).plaintext


@pytest.mark.django_db
@schema.parametrize()
# derandomize: CI sees the same examples on every run (a new finding does not appear at random).
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_api_never_answers_5xx_and_conforms_to_its_schema(case, plaintext):
    headers = {"Authorization": f"Bearer {plaintext}"}
    response = case.call(headers=headers)
    case.validate_response(
        response, headers=headers, excluded_checks=_excluded(case, response), transport_kwargs={"headers": headers}
    )


# What the run above found, pinned as plain examples.


def test_a_json_number_reaches_the_budget_check_as_an_exact_decimal_never_a_float(api, monkeypatch):
    import api.budgets as api_module

    seen = []
    real = api_module.budget_check
    monkeypatch.setattr(api_module, "budget_check", lambda **kw: seen.append(kw["amount"]) or real(**kw))
    assert api.post("/budgets/check", '{"scope": "global", "amount": 0.1}').status_code == 200
    assert seen == [Decimal("0.1")] and type(seen[0]) is Decimal


def test_an_integral_json_number_is_an_integer_and_a_fraction_is_refused(api):
    assert api.post("/batches", {"name": "nightly"}).status_code == 201
    assert api.post("/batches/nightly/finish", '{"leads": 4.5}').status_code == 422
    finished = api.post("/batches/nightly/finish", '{"leads": 4.0}')
    assert finished.status_code == 200 and finished.json()["leads"] == 4


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/budgets/check", {"scope": "global", "amount": "1_000"}, "amount"),
        ("/budgets/check", {"scope": "global", "amount": "-0"}, "amount"),
        ("/budgets/check", {"scope": "region:eu"}, "scope"),
        ("/batches", {"name": "nightly", "note": "a\x00b"}, "note"),
        ("/events", {"events": [], "extra": 1}, "events"),
    ],
)
def test_input_outside_the_schema_is_refused_naming_the_field(api, path, body, field):
    response = api.post(path, body)
    assert response.status_code == 422 and field in response.json()["errors"]


def test_an_unknown_query_parameter_is_refused_not_ignored(api):
    response = api.get("/batches", {"limt": "5"})
    assert response.status_code == 422 and "limt" in response.json()["errors"]
    assert api.get("/batches", {"limit": "5"}).status_code == 200


def test_a_cost_beyond_a_ledger_entry_is_refused_naming_the_quantity_never_a_server_error(api, gpt4o_prices):
    from tracking.models import CostEntry

    huge = {"provider": "openai", "model": "gpt-4o", "input_tokens": 2**62, "idempotency_key": "huge"}
    response = api.post("/events", huge)
    assert response.status_code == 422 and "input_tokens" in response.json()["errors"]
    assert not CostEntry.objects.exists()

    # In a batch that event alone is rejected; the others go in.
    response = api.post("/events", {"events": [huge, {**huge, "input_tokens": 1, "idempotency_key": "small"}]})
    assert response.status_code == 200
    rejected, accepted = response.json()["results"]
    assert rejected["status"] == "rejected" and "input_tokens" in rejected["errors"]
    assert accepted["status"] == "accepted"
    assert [key.rsplit("/", 1)[-1] for key in CostEntry.objects.values_list("idempotency_key", flat=True)] == ["small"]


def test_a_batch_with_the_longest_name_gets_a_default_job_that_fits_its_column(api):
    response = api.post("/batches", {"name": "n" * 200})
    assert response.status_code == 201 and len(response.json()["job"]) <= 200
