"""The dashboard's tables, cards and charts as people read them: amounts with their currency, counts with thousands
separators, scopes in words, and the Chart.js series drawn from a table (amounts as decimal strings)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property
from typing import Any

from core.money import format_money
from core.scopes import scope_inner, scope_team
from tracking.provenance import operation_words

CENT = Decimal("0.01")
UNIT_QUANTUM = Decimal("0.000001")  # a unit cost (per lead) shows up to 6 places


def money(value: Decimal | None) -> str:
    return "" if value is None else f"{value.quantize(CENT, ROUND_HALF_EVEN)}"


def cents(value: Decimal) -> Decimal:
    """An amount as the dashboard's tables and exports carry it: to the cent."""
    return value.quantize(CENT, ROUND_HALF_EVEN)


def money_words(value: Decimal | None, currency: str = "USD") -> str:
    """An amount as people read it on the dashboard: to the cent, thousands separated, with its currency."""
    return "" if value is None else format_money(cents(value), currency)


def unit_cost_words(value: Decimal | None, currency: str = "USD") -> str:
    """A unit cost (per lead): the places it needs, up to 6."""
    return "" if value is None else format_money(value.quantize(UNIT_QUANTUM, ROUND_HALF_EVEN), currency)


def scope_words(scope: str) -> str:
    """A scope as people say it: "provider openai", "team ml: model gpt-4o", "GPU idle", "all spend"."""
    team, inner = scope_team(scope), scope_inner(scope)
    if inner == "global":
        words = "all spend"
    else:
        kind, _, value = inner.partition(":")
        if kind == "operation":
            words = operation_words(value)
        elif kind == "tag":
            key, _, tag_value = value.partition("=")
            words = f"tag {key} = {tag_value}"
        else:
            words = f"{kind} {value}"
    return words if team is None else f"team {team}: {words}"


RECOMMENDATION_WORDS = {
    "cheaper_model": "cheaper model",
    "cached_input": "prompt caching",
    "idle_gpu": "GPU idle",
    "budget_amount": "budget amount",
    "failed_calls": "failed calls",
}


def percent_change(now: Decimal, before: Decimal) -> Decimal | None:
    if before <= 0:
        return None
    return ((now - before) * 100 / before).quantize(Decimal("0.1"), ROUND_HALF_EVEN)


# How a column's values read on the page (the CSV export keeps them plain: 1234.50, gpt-4o, provider:openai).
TEXT, MONEY, UNIT_COST, COUNT, PERCENT, SCOPE, KIND = "text", "money", "unit", "count", "percent", "scope", "kind"
NUMERIC = (MONEY, UNIT_COST, COUNT, PERCENT)


NO_BILLS = "No day billed in this range: bills are imported daily (Spend tracking → Billing sources)."


def cell_words(value: Any, kind: str) -> str:
    if value is None or value == "":
        return ""
    if kind == MONEY:
        return money_words(Decimal(value))
    if kind == UNIT_COST:
        return unit_cost_words(Decimal(value))
    if kind == COUNT:
        return f"{int(value):,}"
    if kind == PERCENT:
        return f"{value} %"
    if kind == SCOPE:
        return scope_words(str(value))
    if kind == KIND:
        return RECOMMENDATION_WORDS.get(str(value), str(value).replace("_", " "))
    return str(value)


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""
    kinds: list[str] = field(default_factory=list)  # per column (TEXT when absent)
    links: list[dict[int, str]] = field(default_factory=list)  # per row: column -> URL (its drill-down)

    def csv_rows(self) -> Iterator[list[Any]]:
        yield self.columns
        yield from self.rows

    def kind(self, column: int) -> str:
        return self.kinds[column] if column < len(self.kinds) else TEXT

    @property
    def header(self) -> list[dict[str, Any]]:
        return [{"name": name, "numeric": self.kind(i) in NUMERIC} for i, name in enumerate(self.columns)]

    @cached_property
    def shown_rows(self) -> list[list[dict[str, Any]]]:
        """The rows as the page shows them: each cell's words, whether it is a number, its link."""
        shown = []
        for index, row in enumerate(self.rows):
            links = self.links[index] if index < len(self.links) else {}
            shown.append(
                [
                    {
                        "text": cell_words(value, self.kind(i)),
                        "numeric": self.kind(i) in NUMERIC,
                        "link": links.get(i, ""),
                    }
                    for i, value in enumerate(row)
                ]
            )
        return shown


@dataclass
class Card:
    label: str
    value: Decimal
    compare_label: str = ""
    compare: Decimal | None = None
    change: Decimal | None = None
    text: str = ""

    @property
    def value_words(self) -> str:
        return money_words(self.value)

    @property
    def compare_words(self) -> str:
        return money_words(self.compare)


def chart_series(
    table: Table, *, columns: list[int] | None = None, label_column: int = 0, x: str = "", y: str = ""
) -> dict[str, Any]:
    """Chart.js data from a table: the label column along one axis, each of `columns` (by default every
    column but the labels and the 'total') a dataset. Amounts travel as decimal strings, drawn as
    numbers; `text` carries each value as the table shows it (the tooltips' exact amounts), `totals`
    the table's total column, if any. x and y name the axes, units included."""
    if columns is None:
        columns = [i for i, name in enumerate(table.columns) if i != label_column and name != "total"]
    total = table.columns.index("total") if "total" in table.columns else None
    return {
        "labels": [row[label_column] for row in table.rows],
        "datasets": [
            {
                "label": table.columns[i],
                "data": [row[i] for row in table.rows],
                "text": [cell_words(row[i], table.kind(i)) for row in table.rows],
            }
            for i in columns
        ],
        "totals": [] if total is None else [cell_words(row[total], table.kind(total)) for row in table.rows],
        "axes": {"x": x, "y": y},
    }
