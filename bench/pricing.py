#!/usr/bin/env python
"""Benchmark of pricing: 100 k mixed events quoted in-process by our PriceBook and by LiteLLM's
`cost_per_token`, on the same usage, in the same run.

    make bench                                        # every benchmark, one table at the end
    .venv/bin/python bench/pricing.py                 # this one only, ~1-2 min; no database
    .venv/bin/python bench/pricing.py --events 20000 --rounds 1     # quicker
    .venv/bin/python bench/pricing.py --json          # machine-readable, same figures

The prices: every row of the shared price file (`--prices`, default ../shared/data/model_prices.json,
else LiteLLM's bundled map, which is the same file) read by tracking.catalog.catalog_parse and
turned into unsaved Price instances (valid from 2020-01-01 UTC), from which one PriceBook is built
(timed apart, not per event). No database is used: quoting reads only the book.

The events (seeded, --seed): chat, reasoning, audio and image models of openai, anthropic, gemini
and bedrock, with prompts from 1 k to 400 k tokens (about a third above the 200 k context tier),
standard / batch / flex / priority service tiers where the model has them, cache reads, 5-minute
and 1-hour cache writes, reasoning tokens, audio tokens in and out, image tokens in and out. Our
side gets the ledger's disjoint quantities; LiteLLM gets the same usage as a `litellm.Usage`
(prompt_tokens including cached, cache-write, audio and image tokens, as the providers report it),
both built before the clock starts.

Measured: each side prices every event once per round (the sides alternate which goes first);
the figure is the median rate over --rounds rounds, in events/s. The ratio is ours / LiteLLM's;
target (issue 17, TARGET_PRICING_RATIO): >= 1, at least as fast as LiteLLM per event. Batch events
are passed to LiteLLM without a service tier (its cost_per_token has no batch tier; its batch
cost is a separate function): it still prices them, at the standard rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench._common import SETTINGS, TARGET_PRICING_RATIO, fmt, log, machine_cores  # noqa: E402

SHARED_PRICES = BASE_DIR.parent / "shared" / "data" / "model_prices.json"
VALID_FROM = datetime(2020, 1, 1, tzinfo=UTC)
AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class Shape:
    """A model of the mix and what its events carry."""

    key: str  # the price file's key (what LiteLLM is called with)
    weight: int
    tiers: tuple[str, ...] = ("",)
    long_prompts: bool = False  # some prompts above the 200 k context tier
    cache_reads: bool = False
    cache_writes: bool = False  # 5-minute and 1-hour
    reasoning: bool = False
    audio: bool = False
    images_in: bool = False
    images_out: bool = False
    text_out: bool = True  # gpt-image-1 answers with image tokens only (the file has no text output price)


SHAPES = (
    Shape("gemini/gemini-2.5-pro", 20, ("", "", "priority", "flex", "batch"), long_prompts=True, cache_reads=True, reasoning=True),
    Shape("claude-sonnet-4-5", 15, ("", "", "batch"), cache_reads=True, cache_writes=True),
    Shape("anthropic.claude-sonnet-4-5-20250929-v1:0", 10, long_prompts=True, cache_reads=True, cache_writes=True),
    Shape("gpt-4o", 15, ("", "", "priority", "batch"), cache_reads=True),
    Shape("o4-mini", 15, ("", "flex", "priority"), cache_reads=True, reasoning=True),
    Shape("gpt-audio", 8, audio=True),
    Shape("gpt-image-1", 9, images_in=True, images_out=True, cache_reads=True, text_out=False),
    Shape("gemini/gemini-2.5-flash-image", 8, images_out=True, reasoning=True),
)  # fmt: skip


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS)
    os.environ.setdefault("DJANGO_DEBUG", "0")
    import django

    django.setup()


def price_book(path: Path) -> tuple[Any, int, float, float]:
    """(the PriceBook of every row of the file, rows, seconds to parse, seconds to build the book)."""
    from tracking.catalog import catalog_parse
    from tracking.models import Price
    from tracking.pricing import PriceBook

    started = time.perf_counter()
    parsed = catalog_parse(path.read_bytes(), source=str(path))
    parse_seconds = time.perf_counter() - started
    # Whatever a catalog row carries that a Price has (service tier, context tier, off-peak windows).
    fields = {f.name for f in Price._meta.concrete_fields} - {"id"}
    started = time.perf_counter()
    prices = [
        Price(
            pk=number,
            valid_from=VALID_FROM,
            **{f.name: getattr(row, f.name) for f in dataclasses.fields(row) if f.name in fields},
        )
        for number, row in enumerate(parsed.prices, start=1)
    ]
    book = PriceBook(prices)
    return book, len(prices), parse_seconds, time.perf_counter() - started


def events(count: int, seed: int, catalog: dict[str, Any], book: Any) -> tuple[list[dict], list[dict], Counter]:
    """(our quote arguments, LiteLLM's cost_per_token arguments, what the mix holds), one pair per event."""
    from litellm import Usage

    from tracking.catalog import split_model_name

    rng = random.Random(seed)
    shapes = [s for s in SHAPES if s.key in catalog]
    missing = [s.key for s in SHAPES if s.key not in catalog]
    if missing:
        log(f"not in the price file, left out of the mix: {', '.join(missing)}")
    ours, theirs, mix = [], [], Counter()
    for shape in rng.choices(shapes, weights=[s.weight for s in shapes], k=count):
        entry = catalog[shape.key]
        provider = entry["litellm_provider"].strip().lower()
        model, variant = split_model_name(shape.key, provider)
        if not book.has_model(provider, model):
            raise SystemExit(f"bench: {provider}/{model} ({shape.key}) has no price in the book")
        tier = rng.choice(shape.tiers)
        prompt = (
            rng.randint(200_001, 400_000) if shape.long_prompts and rng.random() < 0.35 else rng.randint(1_000, 30_000)
        )
        q: dict[str, int] = {}
        if shape.cache_reads and rng.random() < 0.5:
            q["cached_input_tokens"] = prompt * rng.randint(20, 80) // 100
        if shape.cache_writes and rng.random() < 0.4:
            written = (prompt - q.get("cached_input_tokens", 0)) // 2
            q["cache_write_1h_tokens" if rng.random() < 0.5 else "cache_write_tokens"] = written
        if shape.audio:
            q["input_audio_tokens"] = prompt // 2
        if shape.images_in:
            q["input_image_tokens"] = prompt // 3
        q["input_tokens"] = prompt - sum(q.values())
        output = rng.randint(50, 4_000) if shape.text_out else 0
        completion = output
        if shape.reasoning:
            q["reasoning_tokens"] = rng.randint(0, 3 * output)
            completion += q["reasoning_tokens"]
        if shape.audio:
            q["output_audio_tokens"] = rng.randint(100, 3_000)
            completion += q["output_audio_tokens"]
        if shape.images_out:
            q["output_image_tokens"] = rng.choice((1_056, 1_290, 4_160))
            completion += q["output_image_tokens"]
        q["output_tokens"] = output
        for kind, present in (
            ("prompt above 200k tokens", prompt > 200_000),
            (f"service tier {tier or 'standard'}", True),
            ("cache reads", "cached_input_tokens" in q),
            ("5-minute cache writes", "cache_write_tokens" in q),
            ("1-hour cache writes", "cache_write_1h_tokens" in q),
            ("reasoning tokens", "reasoning_tokens" in q),
            ("audio tokens", shape.audio),
            ("image tokens", shape.images_in or shape.images_out),
        ):
            mix[kind] += present
        ours.append(
            {
                "provider": provider,
                "model": model,
                "operation": entry.get("mode") or "",
                "variant": variant,
                "at": AT,
                "quantities": q,
                "service_tier": tier,
            }
        )
        writes_5m, writes_1h = q.get("cache_write_tokens", 0), q.get("cache_write_1h_tokens", 0)
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details={
                "cached_tokens": q.get("cached_input_tokens", 0),
                "audio_tokens": q.get("input_audio_tokens", 0),
                "image_tokens": q.get("input_image_tokens", 0),
                "cache_creation_tokens": writes_5m + writes_1h,
                "cache_creation_token_details": {
                    "ephemeral_5m_input_tokens": writes_5m,
                    "ephemeral_1h_input_tokens": writes_1h,
                },
            },
            completion_tokens_details={
                "reasoning_tokens": q.get("reasoning_tokens", 0),
                "audio_tokens": q.get("output_audio_tokens", 0),
                "image_tokens": q.get("output_image_tokens", 0),
            },
            cache_creation_input_tokens=writes_5m + writes_1h,
            cache_read_input_tokens=q.get("cached_input_tokens", 0),
        )
        theirs.append(
            {
                "model": shape.key,
                "custom_llm_provider": entry["litellm_provider"],
                "usage_object": usage,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "service_tier": tier if tier in ("flex", "priority") else None,
            }
        )
    return ours, theirs, mix


def rate(function: Callable[..., Any], calls: list[dict]) -> tuple[float, Any]:
    """(events per second, the last result) of calling function(**kwargs) for every event."""
    started = time.perf_counter()
    result = None
    for kwargs in calls:
        result = function(**kwargs)
    return len(calls) / (time.perf_counter() - started), result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before importing litellm: no network
    setup_django()
    import litellm

    path = Path(args.prices) if args.prices else SHARED_PRICES
    if not path.exists():
        path = Path(litellm.__file__).parent / "model_prices_and_context_window_backup.json"
    log(f"prices: {path}")
    book, rows, parse_seconds, build_seconds = price_book(path)
    catalog = json.loads(path.read_bytes())
    ours, theirs, mix = events(args.events, args.seed, catalog, book)

    statuses = Counter(book.quote(**kwargs).status for kwargs in ours)  # also warms both sides' lookups
    for kwargs in theirs[:1000]:
        litellm.cost_per_token(**kwargs)
    ours_rates, theirs_rates = [], []
    for number in range(args.rounds):
        sides = [("ours", book.quote, ours, ours_rates), ("litellm", litellm.cost_per_token, theirs, theirs_rates)]
        for name, function, calls, rates in sides if number % 2 == 0 else sides[::-1]:
            value, _ = rate(function, calls)
            rates.append(value)
            log(f"round {number + 1}/{args.rounds}: {name} {value:,.0f} events/s")
    ours_rate, theirs_rate = statistics.median(ours_rates), statistics.median(theirs_rates)
    return {
        "events": len(ours),
        "price_rows": rows,
        "parse_seconds": parse_seconds,
        "book_seconds": build_seconds,
        "mix": dict(mix),
        "statuses": dict(statuses),
        "ours_events_per_second": ours_rate,
        "litellm_events_per_second": theirs_rate,
        "ours_rounds": ours_rates,
        "litellm_rounds": theirs_rates,
        "ratio": ours_rate / theirs_rate if theirs_rate else None,
        "litellm_version": getattr(litellm, "__version__", "") or _version("litellm"),
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows this benchmark adds to the `make bench` table."""
    ratio = result["ratio"]
    return [
        {
            "figure": f"pricing, {result['events']:,} mixed events in-process (PriceBook.quote)",
            "value": result["ours_events_per_second"],
            "unit": "events/s",
            "reference": result["litellm_events_per_second"],
            "reference_name": f"LiteLLM {result['litellm_version']} cost_per_token events/s",
            "ratio": ratio,
            "target": f"ratio >= {TARGET_PRICING_RATIO:g}",
            "met": ratio is not None and ratio >= TARGET_PRICING_RATIO,
        }
    ]


def table(result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"pricing, median of {meta['rounds']} rounds, machine: {meta['cores']} cores, Python {meta['python']}",
        f"  {result['price_rows']:,} price rows: parsed in {result['parse_seconds']:.1f} s, "
        f"book built in {result['book_seconds']:.2f} s (once, not per event)",
        "  mix: " + ", ".join(f"{kind} {count:,}" for kind, count in sorted(result["mix"].items())),
        "  our quotes: " + ", ".join(f"{status} {count:,}" for status, count in sorted(result["statuses"].items())),
        f"  ours     {fmt(result['ours_events_per_second'], 0):>10} events/s   rounds "
        + " ".join(f"{r:,.0f}" for r in result["ours_rounds"]),
        f"  LiteLLM  {fmt(result['litellm_events_per_second'], 0):>10} events/s   rounds "
        + " ".join(f"{r:,.0f}" for r in result["litellm_rounds"]),
    ]
    for row in figures(result):
        verdict = "PASS" if row["met"] else "MISS"
        lines.append(f"ratio ours / LiteLLM {fmt(row['ratio'], 2)}: target {row['target']} -> {verdict}")
    lines.append(f"total {meta['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events in the mix (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, median taken (default 3)")
    parser.add_argument("--seed", type=int, default=17, help="seed of the mix (default 17)")
    parser.add_argument("--prices", default="", help=f"price file (default {SHARED_PRICES})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        result = measure(args)
    except Exception as exc:  # noqa: BLE001 - reported as the benchmark's result, for run_all
        traceback.print_exc()
        result = {"error": f"{exc.__class__.__name__}: {exc}"}
    meta = {
        "benchmark": "pricing",
        "events": args.events,
        "rounds": args.rounds,
        "cores": machine_cores(),
        "python": ".".join(platform.python_version_tuple()[:2]),
        "seconds": time.monotonic() - started,
    }
    if "error" not in result:
        result["figures"] = figures(result)
    if args.json:
        print(json.dumps({"meta": meta, "results": [result]}, indent=2, default=str))
    elif "error" in result:
        log(result["error"])
    else:
        print(table(result, meta))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
