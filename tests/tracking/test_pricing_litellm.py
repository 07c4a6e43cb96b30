"""The quote engine against LiteLLM's own cost function, on every model of the shared price file.

For each rule kind a model's entry carries (context-size tiers, service tiers, batch, off-peak,
1-hour cache writes, reasoning, audio, image and video tokens), the same usage is priced by
``PriceBook.quote`` on the rows ``catalog_parse`` reads from the file and by LiteLLM 1.108.11
(requirements/litellm-ref.txt), whose map is that file; the two must agree to 1e-9 USD in Decimal.

Cases are grouped per (rule kind, provider): ``-k "priority-"`` selects one kind, ``-k gemini`` one
provider. A case whose rows the catalog parser does not emit yet (no row of that kind for the
model) is an expected failure naming the kind; once the parser emits the rows it must pass.
Where we follow the provider rather than LiteLLM (README, "Where we differ from LiteLLM") the case
is not compared: see _differs.
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm: else it fetches the map

import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import litellm
import pytest
from litellm.litellm_core_utils.llm_cost_calc.utils import generic_cost_per_token
from litellm.types.utils import (
    CacheCreationTokenDetails,
    CachedTokensDetails,
    CompletionTokensDetailsWrapper,
    PromptTokensDetailsWrapper,
    Usage,
)

from tests.price_file import PRICE_FILE as REAL_FILE
from tracking.catalog import catalog_parse, modalities_taken
from tracking.models import PricingStatus
from tracking.pricing import PriceBook

# pytest-django: quoting reads no database; Price rows are built unsaved.
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
AT = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)  # a Wednesday, 08:00 UTC: DeepSeek's peak hours
OFF_PEAK_AT = datetime(2026, 3, 7, 8, 0, tzinfo=UTC)  # a Saturday: off-peak all day
TOLERANCE = Decimal("1e-9")
TOKEN_MODES = {"chat", "completion", "responses", ""}
SERVICE_TIERS = ("flex", "priority", "balanced", "ultrafast")
_ABOVE = "_above_"


# Where LiteLLM's number is not the provider's bill and we follow the provider (README, "Where we
# differ from LiteLLM"): those cases are not compared.
def _differs(group, provider, entry):
    if provider == "perplexity" and group in ("cache", "context"):
        # LiteLLM's Perplexity cost function bills every prompt token at the base input price: no cache
        # read price, no context tier, though the file prices both (Perplexity's Agent API price list).
        return True
    if provider == "fireworks_ai" and group == "priority":
        return True  # LiteLLM's dispatch to its Fireworks cost function drops the service tier
    # A batch price for input but none for output: LiteLLM bills half the standard output price, a
    # rule no price list states; we leave the event unpriced, naming the missing batch price.
    return group == "batch" and "output_cost_per_token_batches" not in entry


def _catalog():
    data = REAL_FILE.read_bytes()
    parsed = catalog_parse(data, source="model_prices.json")
    raw = json.loads(data)
    rows_by_key = defaultdict(list)
    keys_by_identity = defaultdict(set)
    for price in parsed.prices:
        rows_by_key[price.key].append(price)
        keys_by_identity[(price.provider, price.model, price.operation, price.variant)].add(price.key)
    return raw, rows_by_key, keys_by_identity


RAW, ROWS_BY_KEY, KEYS_BY_IDENTITY = _catalog()


def _price_rows(key):
    from tracking.models import Price

    return [
        Price(
            provider=row.provider,
            model=row.model,
            operation=row.operation,
            unit=row.unit,
            variant=row.variant,
            service_tier=getattr(row, "service_tier", ""),
            above_tokens=getattr(row, "above_tokens", 0),
            off_peak_windows=getattr(row, "off_peak_windows", []),
            unit_price=row.unit_price,
            currency="USD",
            valid_from=EPOCH,
        )
        for row in ROWS_BY_KEY[key]
    ]


def _thresholds(entry, prefix="input_cost_per_token", suffix=""):
    found = set()
    for name, value in entry.items():
        if name.startswith(prefix + _ABOVE) and name.endswith("_tokens" + suffix) and value is not None:
            text = name.removeprefix(prefix + _ABOVE).removesuffix("_tokens" + suffix)
            if text.removesuffix("k").isdigit():
                found.add(int(text.removesuffix("k")) * (1000 if text.endswith("k") else 1))
    return sorted(found)


def _cases_for(entry):
    """(kind, quantities, service tier, at, the kind's rows: a predicate over the model's Price rows)."""
    has = entry.__contains__
    base = {"input_tokens": 1000, "output_tokens": 500}
    cache = {"cached_input_tokens": 300} if has("cache_read_input_token_cost") else {}
    yield "base", base, "", AT, None
    if has("cache_read_input_token_cost") or has("cache_creation_input_token_cost"):
        yield "cache", {**base, **cache, "cache_write_tokens": 200}, "", AT, None
    if has("output_cost_per_reasoning_token"):
        yield "reasoning", {**base, "reasoning_tokens": 700}, "", AT, None
    if has("cache_creation_input_token_cost_above_1hr"):
        yield "cache_1h", {**base, "cache_write_tokens": 200, "cache_write_1h_tokens": 400}, "", AT, "cache_1h"
    # A modality is fed only to a model that prices or declares it (supports_audio_input, ...): on any
    # other LiteLLM bills it at the text price, we leave it unpriced (README, "Where we differ").
    taken = modalities_taken(entry)
    takes_audio_in = has("input_cost_per_audio_token") or ("audio", "input") in taken
    takes_audio_out = has("output_cost_per_audio_token") or ("audio", "output") in taken
    if takes_audio_in or takes_audio_out:
        audio = {"input_audio_tokens": 250} if takes_audio_in else {}
        if takes_audio_out:
            audio["output_audio_tokens"] = 150
        if has("cache_read_input_audio_token_cost"):
            audio["cached_audio_tokens"] = 50
        yield "audio", {**base, **audio}, "", AT, "audio"
    takes_image_in = has("input_cost_per_image_token") or ("image", "input") in taken
    takes_image_out = has("output_cost_per_image_token") or ("image", "output") in taken
    if takes_image_in or takes_image_out:
        images = {"input_image_tokens": 250} if takes_image_in else {}
        if takes_image_out:
            images["output_image_tokens"] = 120
        yield "image_tokens", {**base, **images}, "", AT, "image_tokens"
    if has("input_cost_per_video_token") or ("video", "input") in taken:
        yield "video_tokens", {**base, "input_video_tokens": 400}, "", AT, "video_tokens"
    for threshold in _thresholds(entry):
        for extra, label in ((1000, "above"), (0, "at")):
            prompt = {"input_tokens": threshold + extra - cache.get("cached_input_tokens", 0), **cache}
            yield f"context_{label}_{threshold}", {**prompt, "output_tokens": 500}, "", AT, "context"
    if isinstance(entry.get("tiered_pricing"), list):
        for tier in entry["tiered_pricing"]:
            start = (tier.get("range") or [0])[0]
            yield (
                f"tiered_pricing_{start}",
                {"input_tokens": int(start) + 1000, "output_tokens": 500},
                "",
                AT,
                "context",
            )
    for service_tier in SERVICE_TIERS:
        if has(f"input_cost_per_token_{service_tier}") or has(f"output_cost_per_token_{service_tier}"):
            yield service_tier, {**base, **cache}, service_tier, AT, service_tier
            for threshold in _thresholds(entry, suffix=f"_{service_tier}") or _thresholds(entry)[:1]:
                prompt = {"input_tokens": threshold + 1000, **cache}
                yield f"{service_tier}_above_{threshold}", {**prompt, "output_tokens": 500}, service_tier, AT, "tier"
    if has("input_cost_per_token_batches"):
        yield "batch", {**base, **cache}, "batch", AT, "batch"
    if isinstance(entry.get("off_peak_pricing"), dict):
        yield "off_peak", {**base, **cache}, "", OFF_PEAK_AT, "off_peak"


NEEDS = {  # a kind's rows, as the parser emits them: whether the model has any
    "cache_1h": lambda rows: any(r.unit == "cache_write_1h_token" for r in rows),
    "audio": lambda rows: any("audio" in r.unit for r in rows),
    "image_tokens": lambda rows: any(r.unit in ("input_image_token", "output_image_token") for r in rows),
    "video_tokens": lambda rows: any(r.unit == "input_video_token" for r in rows),
    "context": lambda rows: any(r.above_tokens for r in rows),
    "batch": lambda rows: any(r.service_tier == "batch" for r in rows),
    "off_peak": lambda rows: any(r.service_tier == "off_peak" for r in rows),
    **{tier: (lambda rows, tier=tier: any(r.service_tier == tier for r in rows)) for tier in SERVICE_TIERS},
    "tier": lambda rows: any(r.service_tier not in ("", "batch", "off_peak") for r in rows),
}


def _comparable_keys():
    for key, entry in RAW.items():
        # Uplifts are compared in test_pricing_uplifts.py: an alias that adds only its uplift is not a model here.
        rows = [row for row in ROWS_BY_KEY.get(key, ()) if row.unit != "uplift"]
        if not rows or entry.get("mode", "") not in TOKEN_MODES or "input_cost_per_token" not in entry:
            continue
        # An alias that shares prices with an earlier key is priced by the earlier key's rows.
        if any(len(KEYS_BY_IDENTITY[(r.provider, r.model, r.operation, r.variant)]) > 1 for r in rows):
            continue
        yield key, entry


def _groups():
    groups = defaultdict(list)
    for key, entry in _comparable_keys():
        for kind, quantities, tier, at, needs in _cases_for(entry):
            group = kind.split("_above_")[0].split("_at_")[0].rstrip("_0123456789")
            if _differs(group, entry["litellm_provider"], entry):
                continue
            groups[(group, entry["litellm_provider"])].append((key, kind, quantities, tier, at, needs))
    params = []
    for (group, provider), cases in sorted(groups.items()):
        expected_failure = [case for case in cases if case[5] and not NEEDS[case[5]](_price_rows(case[0]))]
        marks = []
        if expected_failure and len(expected_failure) == len(cases):
            marks.append(pytest.mark.xfail(reason=f"the catalog parser does not emit {group} rows yet", strict=False))
        params.append(pytest.param(group, provider, cases, id=f"{group}-{provider}", marks=marks))
    return params


def _usage(q):
    cached = q.get("cached_input_tokens", 0) + q.get("cached_audio_tokens", 0) + q.get("cached_image_tokens", 0)
    written_5m = q.get("cache_write_tokens", 0)
    written_1h = q.get("cache_write_1h_tokens", 0)
    audio = q.get("input_audio_tokens", 0) + q.get("cached_audio_tokens", 0)
    image = q.get("input_image_tokens", 0) + q.get("cached_image_tokens", 0)
    video = q.get("input_video_tokens", 0)
    prompt = q.get("input_tokens", 0) + cached + written_5m + written_1h + audio - q.get("cached_audio_tokens", 0)
    prompt += image - q.get("cached_image_tokens", 0) + video
    completion = (
        q.get("output_tokens", 0)
        + q.get("reasoning_tokens", 0)
        + q.get("output_audio_tokens", 0)
        + q.get("output_image_tokens", 0)
    )
    details = PromptTokensDetailsWrapper(
        cached_tokens=cached or None,
        audio_tokens=audio or None,
        image_tokens=image or None,
        video_tokens=video or None,
        cache_creation_tokens=(written_5m + written_1h) or None,
        cache_creation_token_details=(
            CacheCreationTokenDetails(ephemeral_5m_input_tokens=written_5m, ephemeral_1h_input_tokens=written_1h)
            if written_1h
            else None
        ),
        cached_tokens_details=(
            CachedTokensDetails(audio_tokens=q.get("cached_audio_tokens"), image_tokens=q.get("cached_image_tokens"))
            if q.get("cached_audio_tokens") or q.get("cached_image_tokens")
            else None
        ),
    )
    completion_details = CompletionTokensDetailsWrapper(
        reasoning_tokens=q.get("reasoning_tokens") or None,
        audio_tokens=q.get("output_audio_tokens") or None,
        image_tokens=q.get("output_image_tokens") or None,
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details,
        completion_tokens_details=completion_details,
    )


def _litellm_cost(key, entry, quantities, tier, at):
    usage = _usage(quantities)
    provider = entry["litellm_provider"]
    if "off_peak_pricing" in entry:  # the moment is an argument of the generic cost function only
        costs = generic_cost_per_token(model=key, usage=usage, custom_llm_provider=provider, current_time=at)
    elif tier == "batch":
        costs = litellm.cost_per_token(
            model=key, custom_llm_provider=provider, usage_object=usage, call_type="retrieve_batch"
        )
    else:
        costs = litellm.cost_per_token(
            model=key, custom_llm_provider=provider, usage_object=usage, service_tier=tier or None
        )
    return Decimal(repr(costs[0])) + Decimal(repr(costs[1]))


def _exact(quote):
    return sum((Decimal(part["amount"]) for part in quote.prices_used.values()), Decimal(0))


@pytest.mark.parametrize(("kind", "provider", "cases"), _groups())
def test_the_quote_equals_litellms_cost_function(kind, provider, cases):
    mismatches = []
    for key, case_kind, quantities, tier, at, _needs in cases:
        entry = RAW[key]
        rows = _price_rows(key)
        first = rows[0]
        quote = PriceBook(rows).quote(
            provider=first.provider,
            model=first.model,
            operation=first.operation,
            variant=first.variant,
            at=at,
            quantities=quantities,
            service_tier=tier,
        )
        try:
            expected = _litellm_cost(key, entry, quantities, tier, at)
        except Exception as error:  # noqa: BLE001  LiteLLM cannot price it: say so, compare nothing
            mismatches.append(f"{case_kind} {key}: LiteLLM raised {type(error).__name__}: {error}"[:300])
            continue
        if quote.status != PricingStatus.PRICED:
            mismatches.append(f"{case_kind} {key}: unpriced ({quote.prices_used}), LiteLLM {expected}")
            continue
        got = _exact(quote)
        if abs(got - expected) > TOLERANCE:
            mismatches.append(f"{case_kind} {key}: quote {got}, LiteLLM {expected}, quantities {quantities}")

    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ:\n" + "\n".join(mismatches[:20])


# --- usage billed by LiteLLM's other entry points: sessions, citation tokens, guardrails, credits ------


def _quote(key, at=AT, variant=None, **quantities):
    rows = _price_rows(key)
    first = rows[0]
    return PriceBook(rows).quote(
        provider=first.provider,
        model=first.model,
        operation=first.operation,
        variant=first.variant if variant is None else variant,
        at=at,
        quantities=quantities,
    )


def _priced(quote):
    assert quote.status == PricingStatus.PRICED, quote.prices_used
    return _exact(quote)


@pytest.mark.parametrize(("key", "provider"), [("openai/container", "openai"), ("azure/container", "azure")])
def test_code_interpreter_sessions_cost_what_litellms_built_in_tool_tracking_bills(key, provider):
    from litellm.litellm_core_utils.llm_cost_calc.tool_call_cost_tracking import StandardBuiltInToolCostTracking

    expected = StandardBuiltInToolCostTracking.get_cost_for_code_interpreter(sessions=3, provider=provider)

    assert abs(_priced(_quote(key, sessions=3)) - Decimal(repr(expected))) <= TOLERANCE


def test_perplexity_citation_tokens_cost_what_litellms_perplexity_cost_function_bills():
    from litellm.llms.perplexity.cost_calculator import cost_per_token as perplexity_cost

    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)
    usage.citation_tokens = 700
    prompt, completion = perplexity_cost(model="sonar-deep-research", usage=usage, current_time=AT)

    got = _priced(_quote("perplexity/sonar-deep-research", input_tokens=1000, output_tokens=500, citation_tokens=700))
    assert abs(got - Decimal(repr(prompt)) - Decimal(repr(completion))) <= TOLERANCE


@pytest.mark.parametrize("policy", sorted(RAW["bedrock/guardrails"]["guardrail_cost_per_unit"]))
def test_bedrock_guardrail_units_cost_what_litellms_guardrail_cost_bills_per_policy(policy):
    from litellm.litellm_core_utils.llm_cost_calc.guardrail_cost import bedrock_guardrail_cost

    expected = bedrock_guardrail_cost({policy: 12}, None)

    got = _priced(_quote("bedrock/guardrails", variant=policy, guardrail_units=12))
    assert abs(got - Decimal(repr(expected))) <= TOLERANCE


@pytest.mark.parametrize("key", ["reducto/parse-v3", "reducto/parse-legacy"])
@pytest.mark.parametrize(("credits", "pages"), [(6, 4), (Decimal("2.5"), 0)])
def test_reducto_credits_cost_what_litellms_ocr_cost_bills_and_pages_are_not_billed_twice(key, credits, pages):
    from litellm.cost_calculator import ocr_cost
    from litellm.llms.base_llm.ocr.transformation import OCRResponse, OCRUsageInfo

    usage = OCRUsageInfo(pages_processed=pages or None, credits=float(credits))
    expected, _ = ocr_cost(key, "reducto", OCRResponse(pages=[], model=key, usage_info=usage))

    got = _priced(_quote(key, credits=Decimal(credits), pages=pages))
    assert abs(got - Decimal(repr(expected))) <= TOLERANCE


@pytest.mark.parametrize("key", ["xai/grok-voice-3.0", "xai/grok-voice-latest", "xai/grok-voice-2.0"])
def test_xai_voice_text_messages_cost_messages_times_the_rate_litellms_realtime_cost_reads(key):
    # LiteLLM's realtime path bills text_messages x the model's input_cost_per_text_message; its entry
    # point needs a live logging object, so the rate is read as it reads it: from the model's info.
    rate = litellm.get_model_info(model=key, custom_llm_provider="xai")["input_cost_per_text_message"]

    assert abs(_priced(_quote(key, messages=5)) - 5 * Decimal(repr(rate))) <= TOLERANCE
