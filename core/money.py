"""Money: Decimal in Python, an exact integer of nano-units in the database.

Every amount in costcontrol is a ``Decimal`` with at most ``MONEY_PLACES`` (9)
decimal places. In the database it is stored as a 64-bit integer count of
1e-9 currency units (:class:`MoneyField`), because SQLite has no exact decimal
type: its NUMERIC columns hold IEEE doubles, and ``SUM`` or
``amount = amount + excluded.amount`` on them drifts. Integers add exactly on
SQLite and PostgreSQL alike, so ledger = rollups = budgets to the last
nano-dollar on both. The range is +/- 9.2 billion units per row.

Rounding happens once, here: a computed cost (quantity x unit price, summed
over units) is rounded half-to-even to 9 places by :func:`round_money`.
Amounts given explicitly are never rounded: more places than stored is an
error (:func:`parse_money`).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models

MONEY_PLACES = 9
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)  # Decimal("1E-9")
ZERO = Decimal(0).quantize(MONEY_QUANTUM)  # nothing, at the ledger's precision
_SCALE = 10**MONEY_PLACES
_BIGINT_MAX = 2**63 - 1
MONEY_MAX = Decimal(_BIGINT_MAX).scaleb(-MONEY_PLACES).quantize(MONEY_QUANTUM, rounding="ROUND_DOWN")

PRICE_PLACES = 15  # unit prices go down to 1e-10 USD/token in LiteLLM's catalog
PRICE_MAX_DIGITS = 24
# SQLite keeps a decimal column as a double: 15 significant digits come back exactly, more do not
# (123.456789012345678 reads back as 123.456789012346). A unit price has at most this many.
PRICE_SIGNIFICANT_DIGITS = 15

# ISO 4217 active codes. An amount in any other currency is refused.
CURRENCIES = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB
    BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD
    EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS
    INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD
    LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK
    NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK
    SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH
    UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL""".split()
)


def parse_decimal(value: Any, *, field: str) -> Decimal:
    """A finite Decimal from a Decimal, int or decimal string; floats are refused."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValidationError({field: f"must be a decimal string or Decimal, not {type(value).__name__}"})
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValidationError({field: f"{value!r} is not a number"}) from None
    else:
        raise ValidationError({field: f"must be a number, not {type(value).__name__}"})
    if not result.is_finite():
        raise ValidationError({field: f"must be finite, got {value}"})
    return result


def parse_money(value: Any, *, field: str = "amount") -> Decimal:
    """An explicit amount: finite, at most 9 decimal places, within the column's range."""
    result = parse_decimal(value, field=field)
    # Range first: quantizing a huge value (1E+30) to 9 places exceeds the context's precision.
    # Compared, not abs(): abs() rounds to the context and overflows on 1E+999999999.
    if result > MONEY_MAX or result < -MONEY_MAX:
        raise ValidationError({field: f"{value} is out of range (at most {MONEY_MAX})"})
    if result != result.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN):
        raise ValidationError({field: f"{value} has more than {MONEY_PLACES} decimal places"})
    return result.quantize(MONEY_QUANTUM)


def round_money(value: Decimal) -> Decimal:
    """The one place a computed cost is rounded: half-to-even, 9 places."""
    return value.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


def parse_currency(value: Any, *, field: str = "currency") -> str:
    code = str(value or "").strip().upper()
    if code not in CURRENCIES:
        raise ValidationError({field: f"unknown currency {value!r} (expected an ISO 4217 code such as USD)"})
    return code


def to_nanos(value: Decimal) -> int:
    return int(value.scaleb(MONEY_PLACES))


def from_nanos(value: int) -> Decimal:
    return Decimal(value).scaleb(-MONEY_PLACES).quantize(MONEY_QUANTUM)


def format_money(value: Decimal, currency: str = "USD", places: int = 2) -> str:
    """Human display: at least `places` decimals, more when the amount needs them (0.0075 USD)."""
    normalized = value.normalize()
    exponent = normalized.as_tuple().exponent
    shown = max(places, -exponent) if isinstance(exponent, int) else places
    # ",f": plain digits always (",": 1E-9 for a nano-dollar).
    return f"{value.quantize(Decimal(1).scaleb(-shown)):,f} {currency}"


FINE_PLACES = 6
FINE_QUANTUM = Decimal(1).scaleb(-FINE_PLACES)  # Decimal("0.000001")


def format_money_fine(value: Decimal, currency: str = "USD") -> str:
    """One call's amount or a unit cost (a reservation, a ledger entry, a cost per lead): to the cent, or
    to the places it needs up to 6 (0.0042 USD; 0.00182295 shows as 0.001823 USD), rounded half-to-even."""
    return format_money(value.quantize(FINE_QUANTUM, rounding=ROUND_HALF_EVEN), currency)


class MoneyFormField(forms.DecimalField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("decimal_places", MONEY_PLACES)
        kwargs.setdefault("max_digits", 19 + MONEY_PLACES)
        super().__init__(**kwargs)


class MoneyField(models.BigIntegerField):
    """A Decimal amount stored as an exact integer of 1e-9 units (see module docstring)."""

    description = "Money amount (Decimal, 9 places, stored as integer nano-units)"

    def from_db_value(self, value: int | None, expression: Any, connection: Any) -> Decimal | None:
        return None if value is None else from_nanos(int(value))

    def to_python(self, value: Any) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        return parse_money(value, field=self.name or "amount")

    def get_prep_value(self, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        if not isinstance(value, Decimal):
            value = parse_money(value, field=self.name or "amount")
        if not value.is_finite() or value > MONEY_MAX or value < -MONEY_MAX:
            # Before the database says "integer out of range" (PostgreSQL) or OverflowError (SQLite).
            raise ValidationError({self.name: f"{value} is out of range (at most {MONEY_MAX})"})
        if value != value.quantize(MONEY_QUANTUM):
            raise ValidationError({self.name: f"{value} has more than {MONEY_PLACES} decimal places"})
        return to_nanos(value)

    def formfield(self, **kwargs: Any) -> forms.Field:
        return MoneyFormField(
            required=not self.blank, label=self.verbose_name.capitalize(), help_text=self.help_text, **kwargs
        )


def plain_money(value: Decimal | None) -> str | None:
    """An amount as JSON writes it: a plain decimal string without trailing zeros ("12.5"); -0 is "0"."""
    if value is None:
        return None
    return "0" if value.is_zero() else format(value.normalize(), "f")
