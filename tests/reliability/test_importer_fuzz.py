"""A fuzz pass on the price-file importer (issue 9, "bad input"): mutations of a real entry set from
LiteLLM's file (../shared/data/model_prices.json) go through `manage.py import_prices`.

Each one ends in one of two ways, never a traceback:
* refused: a CommandError whose message names the place (the entry and field, or the line and
  column, or the byte) and says nothing was imported; the Price rows are exactly what they were
  before;
* imported: the mutation is one the importer documents as harmless (an unknown mode is the
  operation, an entry without litellm_provider is skipped and counted).

Derandomized with a bounded example count, so CI sees the same files on every run.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.price_file import PRICE_FILE as REAL_FILE
from tracking.models import Price


def _real_entries(count: int = 24) -> dict:
    """sample_spec plus the first priced entries of a few providers, prices as Decimals."""
    data = json.loads(REAL_FILE.read_text(), parse_float=Decimal)
    chosen = {"sample_spec": data["sample_spec"]}
    per_provider: dict[str, int] = {}
    for key, entry in data.items():
        provider = entry.get("litellm_provider") if isinstance(entry, dict) else None
        if provider and "input_cost_per_token" in entry and per_provider.get(provider, 0) < 3:
            per_provider[provider] = per_provider.get(provider, 0) + 1
            chosen[key] = entry
        if len(chosen) > count:
            break
    return chosen


BASE = _real_entries()
PRICED_KEYS = [key for key, entry in BASE.items() if key != "sample_spec" and "input_cost_per_token" in entry]
PRICE_FIELDS = ["input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost", "output_cost_per_image"]


class Raw(str):
    """A value written into the JSON text as is: NaN, 1e400, a 5,000-digit integer, a lone surrogate."""


def entry_dump(data: dict) -> str:
    """The entries as LiteLLM writes them (indented); Decimals as JSON numbers, Raw values verbatim."""
    verbatim: list[str] = []

    def placeholder(value: object) -> object:
        if isinstance(value, Raw):
            verbatim.append(str(value))
        elif isinstance(value, Decimal):
            verbatim.append(str(value))
        elif isinstance(value, dict):
            return {k: placeholder(v) for k, v in value.items()}
        elif isinstance(value, list):
            return [placeholder(v) for v in value]
        else:
            return value
        return f"@@{len(verbatim) - 1}@@"

    text = json.dumps(placeholder(data), indent=2)
    for index, value in enumerate(verbatim):
        text = text.replace(f'"@@{index}@@"', value, 1)
    return text


raw = Raw


# --- mutations -----------------------------------------------------------------------------------
# Each returns (file bytes, what the error must name or None when the import must succeed).

bad_prices = st.sampled_from(
    [
        '"0.000001"',  # a string
        "[0.000001]",
        '{"usd": 1}',
        "-0.000001",
        "-1",
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "1E+9",
        "1" + "0" * 5000,  # beyond Python's integer-string limit
        "true",
        "null",
    ]
)
not_objects = st.sampled_from(["[]", '"gpt"', "1", "null", "true", "[{}]", "0.5"])


@st.composite
def wrong_price(draw):
    key = draw(st.sampled_from(PRICED_KEYS))
    field = draw(st.sampled_from(PRICE_FIELDS))
    data = {k: dict(v) for k, v in BASE.items()}
    data[key][field] = raw(draw(bad_prices))
    return entry_dump(data).encode(), [json.dumps(key), field]


@st.composite
def entry_not_an_object(draw):
    key = draw(st.sampled_from(PRICED_KEYS))
    data = dict(BASE)
    data[key] = raw(draw(not_objects))
    return entry_dump(data).encode(), [json.dumps(key)]


@st.composite
def wrong_text_field(draw):
    key = draw(st.sampled_from(PRICED_KEYS))
    field = draw(st.sampled_from(["litellm_provider", "mode"]))
    data = {k: dict(v) for k, v in BASE.items()}
    data[key][field] = raw(draw(st.sampled_from(["1", "[]", "{}", "true", '"a\\u0000b"', '"\\ud800"'])))
    return entry_dump(data).encode(), [json.dumps(key), field]


@st.composite
def bad_key(draw):
    key = draw(st.sampled_from(PRICED_KEYS))
    new_key = draw(st.sampled_from(["", "   ", "gpt\u0000x", "\ud800-model"]))
    data = {(new_key if k == key else k): v for k, v in BASE.items()}
    return entry_dump(data).encode("utf-8", "surrogatepass"), [json.dumps(new_key)]


@st.composite
def truncated(draw):
    text = entry_dump(BASE).encode()
    cut = draw(st.integers(0, len(text) - 2))
    return text[:cut], ["not valid JSON"]


@st.composite
def invalid_utf8(draw):
    text = entry_dump(BASE).encode()
    at = draw(st.integers(0, len(text)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
    return text[:at] + junk + text[at:], ["not valid UTF-8"]


@st.composite
def deep_nesting(draw):
    depth = draw(st.integers(5_000, 200_000))
    key = draw(st.sampled_from(PRICED_KEYS))
    text = entry_dump(BASE)
    opening = f"{json.dumps(key)}: {{"
    nested = f'{json.dumps(key)}: {{"deep": {"[" * depth}{"]" * depth}, '
    return text.replace(opening, nested, 1).encode(), ["nested too deeply"]


@st.composite
def duplicate_key(draw):
    key = draw(st.sampled_from(PRICED_KEYS))
    text = entry_dump(BASE)
    copy = f'{json.dumps(key)}: {{"litellm_provider": "openai", "input_cost_per_token": 1}},\n  '
    at = text.index(json.dumps(key))
    return (text[:at] + copy + text[at:]).encode(), [json.dumps(key), "twice"]


@st.composite
def duplicate_field(draw):
    key = draw(st.sampled_from(PRICED_KEYS))
    text = entry_dump(BASE)
    opening = f"{json.dumps(key)}: {{"
    return text.replace(opening, opening + '"input_cost_per_token": 5, ', 1).encode(), [
        '"input_cost_per_token"',
        "twice",
    ]


@st.composite
def not_an_object_at_the_top(draw):
    return draw(st.sampled_from([b"[]", b"null", b"1", b'"x"', b"", b"   "])), ["catalog.json"]


@st.composite
def harmless(draw):
    """Documented as imported: an unknown mode becomes the operation; no provider is a counted skip."""
    key = draw(st.sampled_from(PRICED_KEYS))
    data = {k: dict(v) for k, v in BASE.items()}
    if draw(st.booleans()):
        data[key]["mode"] = draw(st.sampled_from(["hologram", "", "chat ", "x" * 60]))
    else:
        del data[key]["litellm_provider"]
    return entry_dump(data).encode(), None


mutations = st.one_of(
    wrong_price(),
    entry_not_an_object(),
    wrong_text_field(),
    bad_key(),
    truncated(),
    invalid_utf8(),
    deep_nesting(),
    duplicate_key(),
    duplicate_field(),
    not_an_object_at_the_top(),
    harmless(),
)


# --- the test --------------------------------------------------------------------------------------


def snapshot() -> list[tuple]:
    return list(
        Price.objects.order_by("pk").values_list(
            "pk",
            "provider",
            "model",
            "operation",
            "unit",
            "variant",
            "unit_price",
            "currency",
            "valid_from",
            "valid_until",
            "source",
        )
    )


@pytest.fixture
def imported_catalog(db, tmp_path):
    """The unmutated entries imported once: a failed import must leave them exactly as they are."""
    path = tmp_path / "catalog.json"
    path.write_text(entry_dump(BASE))
    call_command("import_prices", str(path), "--json", stdout=open(tmp_path / "out", "w"))
    assert Price.objects.count() > 20
    return tmp_path


@pytest.mark.django_db
@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutations)
@example(
    (b'{"gpt-x": {"litellm_provider": "openai", "input_cost_per_token": 1e-6}, "gpt-x": {}}', ['"gpt-x"', "twice"])
)
# A falsy wrong type: `entry.get("mode") or ""` once read [] as no mode and imported the entry.
@example((b'{"gpt-x": {"litellm_provider": "openai", "mode": [], "input_cost_per_token": 1e-6}}', ['"gpt-x"', "mode"]))
def test_a_malformed_catalog_is_refused_naming_the_place_and_changes_nothing(imported_catalog, mutation):
    content, must_name = mutation
    path = imported_catalog / "catalog.json"
    path.write_bytes(content)
    before = snapshot()
    with transaction.atomic():
        savepoint = transaction.savepoint()
        try:
            call_command("import_prices", str(path), "--json", stdout=open(imported_catalog / "out", "w"))
        except CommandError as exc:
            message = str(exc)
            assert message.startswith("catalog.json") and message.endswith("(nothing was imported)")
            for name in must_name or ():
                assert name in message, (name, message)
            assert snapshot() == before
        else:
            assert must_name is None, f"imported a file that should be refused ({must_name})"
        transaction.savepoint_rollback(savepoint)


def test_the_fuzzed_entry_set_is_real_and_imports_cleanly():
    assert len(PRICED_KEYS) >= 10 and "sample_spec" in BASE
    assert all(isinstance(BASE[k]["input_cost_per_token"], Decimal) for k in PRICED_KEYS)
