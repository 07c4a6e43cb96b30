"""python manage.py record_cost --provider openai --model gpt-4o --input-tokens 1000 --output-tokens 500"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from core.money import format_money
from tracking.events import QUANTITY_FIELDS
from tracking.models import INTEGER_QUANTITY_FIELDS, UNIT_QUANTITY_FIELD, CostEntry, ServiceTier, Unit
from tracking.selectors import unpriced_reason
from tracking.services import cost_entry_record

# What the caller may name; off-peak is not asked for but found from the time (DeepSeek's windows).
SERVICE_TIER_CHOICES = ["default", *(t for t in ServiceTier.values if t not in ("", ServiceTier.OFF_PEAK))]
# The ledger's quantities are disjoint: each token is counted in exactly one of them.
QUANTITY_HELP = {
    "input_tokens": "Input text tokens, without cache reads and writes and without audio/image/video tokens.",
    "output_tokens": "Output text tokens, without reasoning and audio/image tokens.",
    "cached_input_tokens": "Input tokens read from the prompt cache.",
    "cache_write_tokens": "Input tokens written to the prompt cache (5-minute lifetime).",
    "cache_write_1h_tokens": "Input tokens written to the prompt cache with a 1-hour lifetime.",
    "reasoning_tokens": "Reasoning (thinking) tokens.",
    "input_audio_tokens": "Input audio tokens, without those read from the cache.",
    "output_audio_tokens": "Output audio tokens.",
    "cached_audio_tokens": "Input audio tokens read from the prompt cache.",
    "input_image_tokens": "Input image tokens, without those read from the cache.",
    "output_image_tokens": "Output image tokens (e.g. gpt-image-1's output_tokens).",
    "embedding_tokens": "Embedding tokens.",
    "images": "Images generated.",
    "requests": "Requests (for per-request prices).",
    "seconds": "Seconds of audio/video/compute (decimal).",
    "gpu_hours": "GPU-hours (decimal).",
}
_UNIT_OF_FIELD = {field: unit for unit, field in UNIT_QUANTITY_FIELD.items()}


def _quantity_help(name: str) -> str:
    """'Billed per web search query.' (the unit's label)."""
    decimal = "" if name in INTEGER_QUANTITY_FIELDS else " (decimal)"
    return f"Billed per {Unit(_UNIT_OF_FIELD[name]).label}{decimal}."


def validation_message(exc: ValidationError) -> str:
    """One line naming the field: 'input_tokens: must be a non-negative integer, got -1'."""
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.message_dict.items())
    return " ".join(exc.messages)


def entry_as_dict(entry: CostEntry, *, created: bool) -> dict[str, Any]:
    return {
        "id": entry.pk,
        "created": created,
        "occurred_at": entry.occurred_at.isoformat(),
        "provider": entry.provider,
        "model": entry.model,
        "operation": entry.operation,
        "variant": entry.variant,
        "service_tier": entry.service_tier,
        "region": entry.region,
        "speed": entry.speed,
        "service": entry.service,
        "subject": entry.subject,
        "job": entry.job,
        "team": entry.team.name if entry.team_id else None,
        "tags": entry.tags,
        "quantities": {
            name: (str(value) if not isinstance(value, int) else value)
            for name in QUANTITY_FIELDS
            if (value := getattr(entry, name))
        },
        "amount": format(entry.amount.normalize(), "f"),
        "currency": entry.currency,
        "pricing_status": entry.pricing_status,
        "prices_used": entry.prices_used,
        "is_estimate": entry.is_estimate,
        "outcome": entry.outcome,
        "duration_ms": entry.duration_ms,
        "idempotency_key": entry.idempotency_key,
    }


class Command(BaseCommand):
    help = (
        "Record one usage event in the cost ledger and print it. The cost comes from the price in force at the "
        "event's time unless --amount is given. The quantities are disjoint, each token counted once: input tokens "
        "exclude cache reads and writes and audio/image tokens (OpenAI: prompt_tokens minus cached_tokens, audio_tokens "
        "...); output tokens exclude reasoning and audio tokens."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--provider", required=True, help="Provider, e.g. openai.")
        parser.add_argument("--model", required=True, help="Model, e.g. gpt-4o.")
        parser.add_argument(
            "--operation", default="", help="chat, embedding, image_generation, ... (default: the catalog's)"
        )
        parser.add_argument("--variant", default="", help="Image size/quality where priced so, e.g. hd/1024-x-1024.")
        parser.add_argument(
            "--service-tier",
            default="default",
            choices=SERVICE_TIER_CHOICES,
            help="The tier that served the call, as the provider's response says (default: the standard tier).",
        )
        parser.add_argument(
            "--region",
            default="",
            help="Where the provider processed the call: OpenAI data residency (eu, us), Vertex AI location "
            "(us-central1, global), Anthropic inference_geo (us, global).",
        )
        parser.add_argument("--speed", default="", help="The speed that served the call (Anthropic: fast).")
        for name in QUANTITY_FIELDS:
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                type=int if name in INTEGER_QUANTITY_FIELDS else str,
                default=None,
                help=QUANTITY_HELP.get(name) or _quantity_help(name),
            )
        parser.add_argument("--amount", default=None, help="Explicit amount (decimal string); skips the catalog.")
        parser.add_argument("--currency", default=None, help="ISO 4217 currency of --amount (default USD).")
        parser.add_argument("--actual", action="store_true", help="The amount is an invoiced actual, not an estimate.")
        parser.add_argument("--service", default="", help="The calling application.")
        parser.add_argument("--subject", default="", help="End user id.")
        parser.add_argument("--job", default="", help="Batch/job id.")
        parser.add_argument("--team", default="", help="Team name (must exist).")
        parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="A tag; repeatable.")
        parser.add_argument("--outcome", default="success", help="success, error or rate_limited.")
        parser.add_argument("--duration-ms", type=int, default=None, help="How long the call took.")
        parser.add_argument("--idempotency-key", default=None, help="Recording the same key twice counts once.")
        parser.add_argument(
            "--at", default=None, help="When it happened (ISO-8601; no offset = TIME_ZONE). Default: now."
        )
        parser.add_argument("--json", action="store_true", help="Print the entry as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        tags: dict[str, str] = {}
        for item in options["tag"]:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CommandError(f"tag: {item!r} is not KEY=VALUE")
            tags[key.strip()] = value.strip()
        occurred_at = None
        if options["at"]:
            try:
                occurred_at = datetime.fromisoformat(options["at"])
            except ValueError:
                raise CommandError(f"at: {options['at']!r} is not an ISO-8601 timestamp") from None
            if timezone.is_naive(occurred_at):
                occurred_at = timezone.make_aware(occurred_at)
        event: dict[str, Any] = {
            "provider": options["provider"],
            "model": options["model"],
            "operation": options["operation"],
            "variant": options["variant"],
            "service_tier": "" if options["service_tier"] == "default" else options["service_tier"],
            "region": options["region"],
            "speed": options["speed"],
            "service": options["service"],
            "subject": options["subject"],
            "job": options["job"],
            "team": options["team"],
            "tags": tags,
            "amount": options["amount"],
            "currency": options["currency"],
            "outcome": options["outcome"],
            "duration_ms": options["duration_ms"],
            "idempotency_key": options["idempotency_key"],
            "occurred_at": occurred_at,
        }
        for name in QUANTITY_FIELDS:
            event[name] = options[name]
        if options["actual"]:
            event["is_estimate"] = False
        try:
            result = cost_entry_record(**event)
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from None

        entry = result.entry
        if options["json"]:
            self.stdout.write(json.dumps(entry_as_dict(entry, created=result.created)))
            return
        what = f"{entry.provider}/{entry.model}" + (f" {entry.operation}" if entry.operation else "")
        verb = "Recorded" if result.created else "Already recorded (same idempotency key), not counted again:"
        line = f"{verb} entry #{entry.pk}: {what}, {format_money(entry.amount, entry.currency)} ({entry.get_pricing_status_display()})"
        self.stdout.write(line)
        if entry.pricing_status == "unpriced":
            why = unpriced_reason(entry.prices_used, provider=entry.provider, model=entry.model)
            self.stderr.write(f"warning: {why}; stored with amount 0 and counted as unpriced")
