"""How the tracking admin pages show things: amounts exact on hover, secondary facts under a cell, durations and links."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.urls import reverse
from django.utils.html import format_html

from core.money import format_money_fine

from . import admin_billing  # noqa: F401  (billing sources, days and billed lines)

LIST_PER_PAGE = 100


EMPTY = "-"


def _change_url(obj: Any) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def _right(text: str) -> str:
    # Amounts line up on their decimals in the change list.
    return format_html('<span style="display:block;text-align:right;font-variant-numeric:tabular-nums">{}</span>', text)


def _sub(text: str) -> str:
    """A secondary fact under a list cell's main one (templates/admin/tracking/change_list.html)."""
    return format_html('<span class="cc-sub">{}</span>', text) if text else ""


def _exactly(shown: str, value: Decimal, currency: str) -> str:
    """An amount as people read it, the ledger's exact figure on hover where the two differ."""
    if Decimal(shown.split()[0].replace(",", "")) == value:
        return shown
    return format_html('<span title="{} {} exactly">{}</span>', f"{value.normalize():f}", currency, shown)


def money_fine(value: Decimal, currency: str) -> str:
    """One call's amount (an entry, a GPU sample): cents, or up to 6 places; exact on hover."""
    return _exactly(format_money_fine(value, currency), value, currency)


def duration_words(seconds: float | Decimal | int) -> str:
    """A duration as people read it: 2h 05m, 4m 30s, 42 s."""
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    if whole >= 60:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole} s"
