"""One way to write dates in the whole admin: "2026-12-04 14:05"."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.contrib.admin.utils import display_for_field, display_for_value
from django.db import models
from django.template import Context, Template
from django.utils import formats

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
    ],
)
def test_a_change_list_cell_is_written_that_way(field: models.Field, value: Any, shown: str) -> None:
    assert display_for_field(value, field, "-") == shown


def test_templates_and_computed_columns_write_them_that_way_too() -> None:
    rendered = Template("{{ when }} | {{ when|date }} | {{ when|time }}").render(Context({"when": WHEN}))
    assert rendered == "2026-12-04 14:05 | 2026-12-04 | 14:05"
    assert display_for_value(WHEN, "-") == "2026-12-04 14:05"
