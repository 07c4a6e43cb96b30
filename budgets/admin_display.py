"""How the budget admin pages write amounts, percents and levels (budgets.admin, budgets.admin_templates):
amounts to the cent with their currency, a level as a coloured badge, an amount as a form shows it."""

from __future__ import annotations

from decimal import Decimal

from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.money import format_money

from .levels import LEVEL_COLOURS, OK, level_label

EMPTY = "-"
CENTS = Decimal("0.01")


def money(value: Decimal | None, currency: str) -> str:
    """A budget's amounts to the cent, with the currency and thousands separators."""
    return EMPTY if value is None else format_money(value.quantize(CENTS), currency)


def percent_text(value: Decimal | None) -> str:
    return EMPTY if value is None else f"{value.quantize(Decimal('0.1'))} %"


def level_badge(level: str | None) -> SafeString:
    if not level:
        return format_html('<span style="color:{}">{}</span>', LEVEL_COLOURS[None], OK)
    return format_html(
        '<span style="background:{};color:#fff;border-radius:3px;padding:1px 6px;font-weight:600">{}</span>',
        LEVEL_COLOURS[level],
        level_label(level),
    )


def plain_amount(value: Decimal) -> str:
    """An amount as a form shows it for editing: to the cent, more places only where it has them
    (2500.00, not 2500.000000000), no separators (it is read back as typed)."""
    exponent = value.normalize().as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"
