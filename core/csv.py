"""CSV exports, streamed: rows are written as they are read, so a large export never sits in memory."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.http import StreamingHttpResponse

# Spreadsheet programs run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class Echo:
    """A file-like object whose write returns what it was given (Django's streaming CSV recipe)."""

    def write(self, value: str) -> str:
        return value


def csv_cell(value: Any) -> Any:
    """Numbers and dates as text; strings that a spreadsheet would run as a formula are quoted with '."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool | int):
        return value
    text = str(value)
    if text.startswith(_FORMULA_START):
        try:
            Decimal(text)
        except ArithmeticError:
            return "'" + text
    return text


def csv_stream(rows: Iterable[Iterable[Any]]) -> Iterable[str]:
    writer = csv.writer(Echo())
    for row in rows:
        yield writer.writerow([csv_cell(v) for v in row])


def csv_response(*, filename: str, rows: Iterable[Iterable[Any]]) -> StreamingHttpResponse:
    """A streamed text/csv attachment of `rows` (the first row is the header)."""
    response = StreamingHttpResponse(csv_stream(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
