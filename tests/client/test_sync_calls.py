"""check / reserve / settle / release / spend / budgets, and the typed errors they raise."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from costcontrol_client import (
    AuthError,
    BudgetExceeded,
    CostcontrolError,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    Unavailable,
)

BUDGET = {
    "id": 3,
    "name": "search monthly",
    "scope": "service:search",
    "period": "month",
    "currency": "USD",
    "limit": "100.00",
    "spent": "99.70",
    "reserved": "0.00",
    "remaining": "0.30",
    "available": "0.30",
    "utilisation": "0.997",
    "level": "critical",
    "hard_limit": True,
    "allowed": False,
    "period_start": "2026-01-01T00:00:00+00:00",
    "period_end": "2026-02-01T00:00:00+00:00",
}


@pytest.fixture
def client(fake_api, make_client):
    return make_client(fake_api.url)


def last_request(fake_api):
    return fake_api.calls()[-1]


def test_check_sends_the_scope_and_amount_as_a_decimal_string_and_returns_the_answer(fake_api, client):
    fake_api.routes[("POST", "/api/v1/budgets/check")] = (200, {"allowed": False, "budgets": [BUDGET]}, {})

    answer = client.check("service:search", Decimal("0.50"))

    assert answer["allowed"] is False
    assert answer["budgets"][0]["available"] == "0.30"
    method, path, headers, body = last_request(fake_api)
    assert (method, path) == ("POST", "/api/v1/budgets/check")
    assert body == {"scope": "service:search", "amount": "0.50"}
    assert headers["Authorization"] == "Bearer cc-test-key"


def test_reserve_then_settle_and_release(fake_api, client):
    reservation = {"id": 9, "budget_id": 3, "budget": "search monthly", "amount": "1.00", "expires_at": "x"}
    fake_api.routes[("POST", "/api/v1/budgets/reserve")] = (201, {"reservations": [reservation]}, {})
    fake_api.routes[("POST", "/api/v1/reservations/9/settle")] = (
        200,
        {"id": 9, "status": "settled", "actual": "0.80"},
        {},
    )
    fake_api.routes[("POST", "/api/v1/reservations/9/release")] = (200, {"id": 9, "status": "released"}, {})

    held = client.reserve("service:search", "1.00", ttl_seconds=900)
    assert last_request(fake_api)[3] == {"scopes": ["service:search"], "amount": "1.00", "ttl_seconds": 900}
    settled = client.settle(held["reservations"][0]["id"], Decimal("0.80"))
    assert last_request(fake_api)[3] == {"actual": "0.80"}
    released = client.release(9)

    assert settled == {"id": 9, "status": "settled", "actual": "0.80"}
    assert released["status"] == "released"


def test_a_reservation_past_a_hard_limit_raises_budget_exceeded_with_the_numbers(fake_api, client):
    fake_api.routes[("POST", "/api/v1/budgets/reserve")] = (
        409,
        {
            "code": "budget_exceeded",
            "message": "search monthly has 0.30 USD left",
            "budget": {"id": 3, "name": "search monthly"},
            "available": "0.30",
            "requested": "1.00",
        },
        {},
    )

    with pytest.raises(BudgetExceeded) as caught:
        client.reserve(["service:search", "global"], "1.00")

    error = caught.value
    assert error.status == 409
    assert error.code == "budget_exceeded"
    assert error.message == "search monthly has 0.30 USD left"
    assert error.available == Decimal("0.30")
    assert error.requested == Decimal("1.00")
    assert error.budget == {"id": 3, "name": "search monthly"}
    assert isinstance(error, CostcontrolError)
    assert last_request(fake_api)[3]["scopes"] == ["service:search", "global"]


@pytest.mark.parametrize(
    ("status", "body", "headers", "error_type", "code"),
    [
        (401, {"code": "unauthorized", "message": "unknown API key"}, {}, AuthError, "unauthorized"),
        (403, {"code": "forbidden", "message": "read-only key"}, {}, AuthError, "forbidden"),
        (404, {"code": "not_found", "message": "no reservation 9"}, {}, NotFound, "not_found"),
        (
            422,
            {"code": "invalid", "message": "bad", "errors": {"amount": ["not a number"]}},
            {},
            InvalidRequest,
            "invalid",
        ),
        (429, {"code": "rate_limited", "message": "slow down"}, {"Retry-After": "7"}, RateLimited, "rate_limited"),
        (503, {"code": "unavailable", "message": "database down"}, {"Retry-After": "30"}, Unavailable, "unavailable"),
        (500, {"code": "error", "message": "boom"}, {}, ServerError, "error"),
    ],
)
def test_server_errors_become_typed_exceptions_carrying_code_and_message(
    fake_api, client, status, body, headers, error_type, code
):
    fake_api.routes[("POST", "/api/v1/budgets/check")] = (status, body, headers)

    with pytest.raises(error_type) as caught:
        client.check("global", "1")

    assert caught.value.status == status
    assert caught.value.code == code
    assert caught.value.message == body["message"]
    assert body["message"] in str(caught.value)
    if "Retry-After" in headers:
        assert caught.value.retry_after == float(headers["Retry-After"])
    if "errors" in body:
        assert caught.value.errors == {"amount": ["not a number"]}


def test_a_server_that_cannot_be_reached_raises_unavailable(make_client):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", max_retries=0)

    with pytest.raises(Unavailable) as caught:
        client.check("global", "1")

    assert caught.value.code == "unreachable"
    assert caught.value.status is None


def test_spend_asks_with_the_period_as_iso_timestamps(fake_api, client):
    answer = {"scope": "global", "total": "12.34", "currency": "USD", "groups": [{"key": "openai", "amount": "10.00"}]}
    fake_api.routes[("GET", "/api/v1/spend")] = (200, answer, {})

    got = client.spend("global", datetime(2026, 1, 1, tzinfo=UTC), "2026-02-01T00:00:00+00:00", group_by="provider")

    assert got["total"] == "12.34"
    query = parse_qs(urlsplit(last_request(fake_api)[1]).query)
    assert query == {
        "scope": ["global"],
        "from": ["2026-01-01T00:00:00+00:00"],
        "to": ["2026-02-01T00:00:00+00:00"],
        "group_by": ["provider"],
    }


def test_budgets_lists_the_budgets(fake_api, client):
    fake_api.routes[("GET", "/api/v1/budgets")] = (200, {"budgets": [BUDGET]}, {})

    assert client.budgets() == [BUDGET]


def test_money_as_float_is_refused_before_anything_is_sent(fake_api, client):
    with pytest.raises(TypeError):
        client.check("global", 0.1)
    with pytest.raises(TypeError):
        client.settle(9, 0.8)

    assert fake_api.calls() == []


def test_a_url_with_a_path_prefix_is_honoured(fake_api, make_client):
    fake_api.routes[("GET", "/costcontrol/api/v1/budgets")] = (200, {"budgets": []}, {})
    client = make_client(fake_api.url + "/costcontrol/")

    assert client.budgets() == []
    assert last_request(fake_api)[1] == "/costcontrol/api/v1/budgets"


def test_a_url_that_is_not_http_is_refused(make_client):
    with pytest.raises(ValueError, match="http"):
        make_client("ftp://example.org")
