"""Property tests of the money and pricing code (issue 9, "bad input"): no float anywhere, a cost is
rounded once (half-to-even, 9 places) from the exact sum of quantity x unit price, amounts and prices
round-trip through the database unchanged, and out-of-range or non-finite input is refused with an
error naming the field.

The policy they check (costcontrol/money.py): a float is refused wherever money or a quantity comes
in, even an integral one (3.0): binary fractions are not money and no code path converts one.
Derandomized with bounded example counts, so CI sees the same cases on every run.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal

import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.money import (
    MONEY_MAX,
    MONEY_PLACES,
    MoneyField,
    format_money,
    from_nanos,
    parse_decimal,
    parse_money,
    round_money,
    to_nanos,
)
from tracking.catalog import PRICE_LIMIT, round_price
from tracking.models import UNIT_QUANTITY_FIELD, Price, Unit
from tracking.pricing import PriceBook

FAST = settings(max_examples=200, deadline=None, derandomize=True)
DB = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EXACT = Context(prec=200)  # the independent computation: far more digits than any input has
NANO = Decimal("1E-9")
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def exact_round(value: Decimal) -> Decimal:
    return value.quantize(NANO, rounding=ROUND_HALF_EVEN, context=EXACT)


def field_named(exc: ValidationError, field: str) -> bool:
    return field in exc.message_dict


# --- strategies ---------------------------------------------------------------------------------

# Amounts a ledger entry can hold: at most 9 places, within +/- MONEY_MAX.
amounts = st.decimals(min_value=-MONEY_MAX, max_value=MONEY_MAX, places=MONEY_PLACES, allow_nan=False)
# Unit prices as the catalog stores them: below 1e9, at most 15 places and 15 significant digits.
prices = st.builds(
    lambda digits, exponent: Decimal(digits).scaleb(exponent, context=EXACT),
    st.integers(0, 10**15 - 1),
    st.integers(-15, -7),
)
token_counts = st.integers(0, 2**40) | st.integers(0, 10**6)
decimal_quantities = st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False)
floats = st.floats(allow_nan=True, allow_infinity=True)
non_finite = st.sampled_from(["NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "inf"]).map(Decimal)
huge = st.integers(10, 999_999).map(lambda e: Decimal(1).scaleb(e))  # 1E+10 .. 1E+999999 (the context's Emax)


# --- parse_money and friends ------------------------------------------------------------------------


@FAST
@given(floats, st.sampled_from(["amount", "actual", "limit"]))
@example(3.0, "amount")  # integral: still a float, still refused
@example(0.1, "amount")
def test_a_float_is_refused_wherever_money_comes_in_naming_the_field(value, field):
    for parse in (parse_money, parse_decimal):
        with pytest.raises(ValidationError) as caught:
            parse(value, field=field)
        assert field_named(caught.value, field) and "float" in str(caught.value)


@FAST
@given(amounts, st.sampled_from([str, lambda d: d, lambda d: format(d, "f")]))
def test_an_amount_within_range_is_taken_exactly_as_a_decimal(value, form):
    parsed = parse_money(form(value), field="amount")
    assert type(parsed) is Decimal and parsed == value
    assert parsed.as_tuple().exponent == -MONEY_PLACES  # stored at the stated place, nothing rounded


@FAST
@given(amounts, st.integers(1, 20))
def test_more_places_than_stored_is_an_error_not_a_rounding(value, extra_places):
    finer = EXACT.add(value, Decimal(1).scaleb(-MONEY_PLACES - extra_places))
    with pytest.raises(ValidationError) as caught:
        parse_money(str(finer), field="amount")
    # Beyond 9 places, or (at the range's edge) beyond MONEY_MAX: refused either way, never rounded.
    assert field_named(caught.value, "amount") and re.search("decimal places|out of range", str(caught.value))


@FAST
@given(st.one_of(non_finite, huge, huge.map(lambda d: -d), huge.map(str)), st.sampled_from(["amount", "actual"]))
@example(MONEY_MAX + NANO, "amount")
@example("1e999999999", "amount")  # beyond the context's Emax: abs() of it overflowed (a traceback)
@example("-1E+999999999", "actual")
def test_non_finite_and_out_of_range_amounts_are_refused_naming_the_field(value, field):
    with pytest.raises(ValidationError) as caught:
        parse_money(value, field=field)
    assert field_named(caught.value, field)


@FAST
@given(amounts)
def test_round_money_rounds_once_half_to_even_at_nine_places(value):
    finer = st_value = value + Decimal("5E-10")  # exactly half a nano: the tie goes to the even digit
    assert round_money(finer) == exact_round(st_value)
    assert round_money(value) == value


@FAST
@given(amounts)
def test_the_integer_column_holds_every_amount_exactly(value):
    field = MoneyField(name="amount")
    stored = field.get_prep_value(value)
    assert type(stored) is int and stored == to_nanos(value)
    back = field.from_db_value(stored, None, None)
    assert type(back) is Decimal and back == value and from_nanos(stored) == value


@FAST
@given(st.one_of(huge, non_finite.filter(lambda d: not d.is_nan()), st.just(MONEY_MAX + NANO)))
def test_the_column_refuses_an_amount_it_cannot_hold_naming_the_field(value):
    with pytest.raises(ValidationError) as caught:
        MoneyField(name="limit").get_prep_value(value)
    assert field_named(caught.value, "limit")


@FAST
@given(amounts, st.integers(0, 4))
def test_formatting_shows_the_exact_amount_never_a_rounded_one(value, places):
    shown = format_money(value, "USD", places)
    number, currency = shown.rsplit(" ", 1)
    assert currency == "USD" and Decimal(number.replace(",", "")) == value
    assert len(number.partition(".")[2]) >= places


@pytest.mark.django_db
@DB
@given(amounts.filter(lambda d: d >= 0))
def test_an_amount_round_trips_through_the_database_unchanged(value):
    from budgets.models import Budget
    from tests.factories import BudgetFactory

    budget = BudgetFactory()
    Budget.objects.filter(pk=budget.pk).update(amount=value)
    read = Budget.objects.values_list("amount", flat=True).get(pk=budget.pk)
    assert type(read) is Decimal and read == value
    Budget.objects.filter(pk=budget.pk).delete()


# --- pricing --------------------------------------------------------------------------------------------

PRICED_UNITS = [Unit.INPUT_TOKEN, Unit.OUTPUT_TOKEN, Unit.CACHED_INPUT_TOKEN, Unit.IMAGE, Unit.SECOND, Unit.GPU_HOUR]


def book_of(unit_prices: dict[str, Decimal]) -> PriceBook:
    return PriceBook(
        Price(
            pk=index,
            provider="acme",
            model="m1",
            operation="",
            unit=unit,
            variant="",
            unit_price=price,
            currency="USD",
            valid_from=EPOCH,
        )
        for index, (unit, price) in enumerate(unit_prices.items(), start=1)
    )


def quote(book: PriceBook, quantities: dict[str, object]):
    return book.quote(
        provider="acme", model="m1", operation="", variant="", at=EPOCH + timedelta(days=1), quantities=quantities
    )


def quantity_strategy(unit: str):
    return decimal_quantities if UNIT_QUANTITY_FIELD[unit] in ("seconds", "gpu_hours") else token_counts


events = st.fixed_dictionaries({unit: prices for unit in PRICED_UNITS}).flatmap(
    lambda unit_prices: st.tuples(
        st.just(unit_prices),
        st.fixed_dictionaries({UNIT_QUANTITY_FIELD[unit]: quantity_strategy(unit) for unit in PRICED_UNITS}),
    )
)


def exact_cost(unit_prices: dict[str, Decimal], quantities: dict[str, object]) -> Decimal:
    total = Decimal(0)
    for unit, price in unit_prices.items():
        total = EXACT.add(total, EXACT.multiply(Decimal(quantities[UNIT_QUANTITY_FIELD[unit]]), price))
    return exact_round(total)


def no_float_in(value: object) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(no_float_in(k) and no_float_in(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return all(no_float_in(v) for v in value)
    return True


@FAST
@given(events)
# Two halves of a nano-dollar: rounded per part (half-to-even) each is 0, rounded once they are 1E-9.
@example(
    (
        {u: Decimal("5E-10") if u in (Unit.INPUT_TOKEN, Unit.OUTPUT_TOKEN) else Decimal(0) for u in PRICED_UNITS},
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cached_input_tokens": 0,
            "images": 0,
            "seconds": Decimal(0),
            "gpu_hours": Decimal(0),
        },
    )
)
# A product of 29 digits, exactly 10000000.168191423|499999999995: the default context (28 digits)
# rounds it to ...4235000..., which half-to-even then rounds up to ...424; exact, it rounds to ...423.
@example(
    (
        {u: Decimal("81000.002099450549455") if u == Unit.SECOND else Decimal(0) for u in PRICED_UNITS},
        {
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "images": 0,
            "seconds": Decimal("123.456789"),
            "gpu_hours": Decimal(0),
        },
    )
)
def test_an_events_cost_is_the_exact_sum_of_its_parts_rounded_once(event):
    unit_prices, quantities = event
    if exact_cost(unit_prices, quantities) > MONEY_MAX:
        with pytest.raises(ValidationError):
            quote(book_of(unit_prices), quantities)
        return
    result = quote(book_of(unit_prices), quantities)
    assert type(result.amount) is Decimal
    assert result.amount == exact_cost(unit_prices, quantities)
    assert result.amount.as_tuple().exponent == -MONEY_PLACES
    assert no_float_in(result.prices_used) and no_float_in(result.amount)


def test_rounding_each_part_would_differ_and_the_code_does_not_do_it():
    unit_prices = {Unit.INPUT_TOKEN: Decimal("5E-10"), Unit.OUTPUT_TOKEN: Decimal("5E-10")}
    quantities = {"input_tokens": 1, "output_tokens": 1}
    per_part = sum(exact_round(q * unit_prices[u]) for u, q in zip(unit_prices, (1, 1), strict=True))
    assert per_part == 0  # the comparison is not vacuous
    assert quote(book_of(unit_prices), quantities).amount == Decimal("1E-9")


@FAST
@given(st.sampled_from(sorted(UNIT_QUANTITY_FIELD.values())), st.floats(min_value=0.5, max_value=1e6))
def test_a_float_quantity_is_refused_by_pricing_naming_the_field(field, value):
    book = book_of({unit: Decimal("0.001") for unit in UNIT_QUANTITY_FIELD})
    with pytest.raises(ValidationError) as caught:
        quote(book, {field: value})
    assert field_named(caught.value, field)


@FAST
@given(st.integers(10**15, 2**63 - 1), prices.filter(lambda p: p >= Decimal("1E-5")))
def test_a_cost_beyond_the_ledger_is_refused_naming_the_quantity(tokens, price):
    book = book_of({Unit.INPUT_TOKEN: price * 1000})
    with pytest.raises(ValidationError) as caught:
        quote(book, {"input_tokens": tokens})
    assert field_named(caught.value, "input_tokens")


@pytest.fixture
def gpt4o_unit_prices(gpt4o_prices):
    return {unit: Price.objects.get(pk=price.pk).unit_price for unit, price in gpt4o_prices.items()}


@pytest.mark.django_db
@DB
@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9))
def test_a_recorded_entry_costs_the_exact_rounded_sum_read_back_from_the_ledger(
    gpt4o_unit_prices, inputs, outputs, cached
):
    from tracking.models import CostEntry
    from tracking.services import cost_entry_record

    entry = cost_entry_record(
        provider="openai", model="gpt-4o", input_tokens=inputs, output_tokens=outputs, cached_input_tokens=cached
    ).entry
    unit_prices = gpt4o_unit_prices
    expected = exact_cost(
        unit_prices, {"input_tokens": inputs, "output_tokens": outputs, "cached_input_tokens": cached}
    )
    assert CostEntry.objects.values_list("amount", flat=True).get(pk=entry.pk) == expected


# --- unit prices --------------------------------------------------------------------------------------


@pytest.mark.django_db
@DB
@given(prices.filter(lambda p: p < PRICE_LIMIT) | st.decimals(min_value=0, max_value=999_999, places=9))
@example(Decimal("123.456789012345"))
def test_a_unit_price_round_trips_through_the_database_unchanged(price):
    from tracking.catalog import price_set

    stored = price_set(provider="acme", model="m1", operation="", unit=Unit.SECOND, unit_price=price, valid_from=EPOCH)
    assert Price.objects.values_list("unit_price", flat=True).get(pk=stored.pk) == price
    Price.objects.filter(pk=stored.pk).delete()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "price", ["123.456789012345678", "NaN", "Infinity", "-1", "1E+9", "1e999999", "1E-16", 0.5, 2.0]
)
def test_a_unit_price_the_column_cannot_keep_exactly_is_refused_naming_the_field(price):
    from tracking.catalog import price_set

    with pytest.raises(ValidationError) as caught:
        price_set(provider="acme", model="m1", operation="", unit=Unit.SECOND, unit_price=price, valid_from=EPOCH)
    assert field_named(caught.value, "unit_price")
    assert not Price.objects.exists()


@FAST
@given(st.decimals(min_value=0, max_value=Decimal("999999999"), allow_nan=False, allow_infinity=False))
def test_a_catalog_price_is_rounded_once_to_15_places_or_15_significant_digits(value):
    rounded = round_price(value)
    digits = rounded.normalize().as_tuple()
    assert len(digits.digits) <= 15 or rounded == 0
    assert rounded.as_tuple().exponent == -15
    # Once, at the place: within half a unit of the last kept digit of the exact value.
    place = max(-15, value.adjusted() + 1 - 15) if value else -15
    assert abs(EXACT.subtract(rounded, value)) <= Decimal(5).scaleb(place - 1)
