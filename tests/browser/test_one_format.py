"""One way to write dates in the whole admin ("2026-12-04 14:05"), numbers grouped by thousands, and
admin forms that still read back the numbers they show (no browser needed: Django's test client)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.admin.utils import display_for_field, display_for_value
from django.db import models
from django.template import Context, Template
from django.utils import formats

from alerts.models import AlertRule
from budgets.models import Budget

WHEN = datetime(2026, 12, 4, 14, 5, 33, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("DATETIME_FORMAT", WHEN, "2026-12-04 14:05"),
        ("SHORT_DATETIME_FORMAT", WHEN, "2026-12-04 14:05"),
        ("DATE_FORMAT", WHEN.date(), "2026-12-04"),
        ("SHORT_DATE_FORMAT", WHEN.date(), "2026-12-04"),
        ("TIME_FORMAT", WHEN.time(), "14:05"),
    ],
)
def test_the_admin_writes_dates_and_times_one_way(name: str, value: Any, shown: str) -> None:
    formatter = formats.time_format if name == "TIME_FORMAT" else formats.date_format
    assert formatter(value, name) == shown


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        (models.DateTimeField(), WHEN, "2026-12-04 14:05"),
        (models.DateField(), date(2026, 12, 4), "2026-12-04"),
        (models.IntegerField(), 558378, "558,378"),
        (models.DecimalField(max_digits=12, decimal_places=2), Decimal("12345.50"), "12,345.50"),
    ],
)
def test_a_change_list_cell_is_written_that_way(field: models.Field, value: Any, shown: str) -> None:
    assert display_for_field(value, field, "-") == shown


def test_templates_and_computed_columns_write_them_that_way_too() -> None:
    rendered = Template("{{ when }} | {{ when|date }} | {{ when|time }} | {{ tokens }}").render(
        Context({"when": WHEN, "tokens": 1234567})
    )
    assert rendered == "2026-12-04 14:05 | 2026-12-04 | 14:05 | 1,234,567"
    assert display_for_value(WHEN, "-") == "2026-12-04 14:05"


class FormFields(HTMLParser):
    """The values a browser would send back for the admin's change form, as the page shows them."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and "_form" in a.get("id", ""):
            self._in_form = True
        if not self._in_form or "disabled" in a:
            return
        name = a.get("name", "")
        if tag == "input" and name and a.get("type") not in {"submit", "button", "file"}:
            if a.get("type") in {"checkbox", "radio"} and "checked" not in a:
                return
            self.data.setdefault(name, []).append(a.get("value", "on" if a.get("type") == "checkbox" else ""))
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select].append(a.get("value", ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = [""]

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.data[self._textarea][0] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea:
            self.data[self._textarea][0] = self.data[self._textarea][0].removeprefix("\n")
            self._textarea = None
        elif tag == "form":
            self._in_form = False


def form_as_shown(client: Any, url: str) -> dict[str, list[str]]:
    response = client.get(url)
    assert response.status_code == 200
    parser = FormFields()
    parser.feed(response.content.decode())
    return parser.data


@pytest.mark.parametrize(
    ("make", "field", "value"),
    [
        (lambda: Budget.objects.create(name="Big", scope="global", amount=Decimal("12345.5")), "amount", "12345.5"),
        (
            lambda: AlertRule.objects.create(name="Tokens", metric="tokens", window="hour", threshold=Decimal(25000)),
            "threshold",
            "25000",
        ),
    ],
    ids=["budget amount", "alert rule threshold"],
)
def test_a_decimal_input_shows_a_number_its_form_reads_back(
    admin_client: Any, make: Any, field: str, value: str
) -> None:
    """Grouped thousands are for reading: an input shows 12345.50, never 12,345.50, and the form saved
    as shown keeps the value."""
    obj = make()
    url = f"/admin/{obj._meta.app_label}/{obj._meta.model_name}/{obj.pk}/change/"
    data = form_as_shown(admin_client, url)
    shown = data[field][0]
    assert "," not in shown and Decimal(shown) == Decimal(value)
    response = admin_client.post(url, {**data, "_continue": "Save"})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    obj.refresh_from_db()
    assert getattr(obj, field) == Decimal(value)
