"""What was spent: the price catalog, the cost ledger and its hourly rollups."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_prometheus.models import ExportModelOperationsMixin

from core.money import PRICE_MAX_DIGITS, PRICE_PLACES, MoneyField, format_money, format_money_fine


class Unit(models.TextChoices):
    """What a price is per. Each unit has a quantity column of the same meaning on CostEntry."""

    INPUT_TOKEN = "input_token", "input token"
    OUTPUT_TOKEN = "output_token", "output token"
    CACHED_INPUT_TOKEN = "cached_input_token", "cached input token (cache read)"
    CACHE_WRITE_TOKEN = "cache_write_token", "cache write token"
    REASONING_TOKEN = "reasoning_token", "reasoning token"
    EMBEDDING_TOKEN = "embedding_token", "embedding token"
    IMAGE = "image", "image"
    REQUEST = "request", "request"
    SECOND = "second", "second"
    GPU_HOUR = "gpu_hour", "GPU-hour"
    CACHE_WRITE_1H_TOKEN = "cache_write_1h_token", "cache write token (1-hour lifetime)"
    INPUT_AUDIO_TOKEN = "input_audio_token", "input audio token"
    OUTPUT_AUDIO_TOKEN = "output_audio_token", "output audio token"
    CACHED_AUDIO_TOKEN = "cached_audio_token", "cached audio token (cache read)"
    CACHE_WRITE_AUDIO_TOKEN = "cache_write_audio_token", "audio cache write token"
    INPUT_IMAGE_TOKEN = "input_image_token", "input image token"
    OUTPUT_IMAGE_TOKEN = "output_image_token", "output image token"
    CACHED_IMAGE_TOKEN = "cached_image_token", "cached image token (cache read)"
    INPUT_VIDEO_TOKEN = "input_video_token", "input video token"
    OUTPUT_VIDEO_TOKEN = "output_video_token", "output video token"
    INPUT_CHARACTER = "input_character", "input character"
    OUTPUT_CHARACTER = "output_character", "output character"
    INPUT_IMAGE = "input_image", "image in the prompt"
    PIXEL = "pixel", "pixel"
    PAGE = "page", "page"
    WEB_SEARCH = "web_search", "web search query"
    MAPS_QUERY = "maps_query", "maps grounding query"
    INPUT_AUDIO_SECOND = "input_audio_second", "second of input audio"
    INPUT_VIDEO_SECOND = "input_video_second", "second of input video"
    SESSION = "session", "code interpreter session"
    MESSAGE = "message", "text message"
    CITATION_TOKEN = "citation_token", "citation token"
    GUARDRAIL_UNIT = "guardrail_unit", "guardrail policy unit"
    CREDIT = "credit", "credit"
    # Not a quantity: a factor on the event's token prices, applied when the event meets the price's
    # condition (its variant: "data_residency:eu", "vertex_location:regional", "inference_geo:us",
    # "speed:fast"). tracking.pricing.UPLIFT_CONDITIONS.
    UPLIFT = "uplift", "price multiplier"
    # Not a quantity: how many units of another unit (the price's variant, e.g. input_image) each call
    # gets free, as the unit price (MiniMax: the first 5 prompt images of a video call).
    FREE_PER_CALL = "free_per_call", "free units per call"


class ServiceTier(models.TextChoices):
    """How the provider served a call; each tier has its own prices ("" is the standard tier)."""

    STANDARD = "", "standard"
    BATCH = "batch", "batch"
    FLEX = "flex", "flex"
    PRIORITY = "priority", "priority"
    BALANCED = "balanced", "balanced"
    ULTRAFAST = "ultrafast", "ultrafast"
    # Not asked for by the caller: a standard-tier event inside a price's off_peak_windows (DeepSeek).
    OFF_PEAK = "off_peak", "off-peak"


# Unit -> the CostEntry quantity field that counts it.
UNIT_QUANTITY_FIELD: dict[str, str] = {
    Unit.INPUT_TOKEN: "input_tokens",
    Unit.OUTPUT_TOKEN: "output_tokens",
    Unit.CACHED_INPUT_TOKEN: "cached_input_tokens",
    Unit.CACHE_WRITE_TOKEN: "cache_write_tokens",
    Unit.REASONING_TOKEN: "reasoning_tokens",
    Unit.EMBEDDING_TOKEN: "embedding_tokens",
    Unit.IMAGE: "images",
    Unit.REQUEST: "requests",
    Unit.SECOND: "seconds",
    Unit.GPU_HOUR: "gpu_hours",
    Unit.CACHE_WRITE_1H_TOKEN: "cache_write_1h_tokens",
    Unit.INPUT_AUDIO_TOKEN: "input_audio_tokens",
    Unit.OUTPUT_AUDIO_TOKEN: "output_audio_tokens",
    Unit.CACHED_AUDIO_TOKEN: "cached_audio_tokens",
    Unit.CACHE_WRITE_AUDIO_TOKEN: "cache_write_audio_tokens",
    Unit.INPUT_IMAGE_TOKEN: "input_image_tokens",
    Unit.OUTPUT_IMAGE_TOKEN: "output_image_tokens",
    Unit.CACHED_IMAGE_TOKEN: "cached_image_tokens",
    Unit.INPUT_VIDEO_TOKEN: "input_video_tokens",
    Unit.OUTPUT_VIDEO_TOKEN: "output_video_tokens",
    Unit.INPUT_CHARACTER: "input_characters",
    Unit.OUTPUT_CHARACTER: "output_characters",
    Unit.INPUT_IMAGE: "input_images",
    Unit.PIXEL: "pixels",
    Unit.PAGE: "pages",
    Unit.WEB_SEARCH: "web_searches",
    Unit.MAPS_QUERY: "maps_queries",
    Unit.INPUT_AUDIO_SECOND: "input_audio_seconds",
    Unit.INPUT_VIDEO_SECOND: "input_video_seconds",
    Unit.SESSION: "sessions",
    Unit.MESSAGE: "messages",
    Unit.CITATION_TOKEN: "citation_tokens",
    Unit.GUARDRAIL_UNIT: "guardrail_units",
    Unit.CREDIT: "credits",
}
# The ledger's quantities are disjoint: a token is counted in exactly one field. input_tokens are the
# prompt's text tokens that were neither read from nor written to a cache; output_tokens exclude
# reasoning tokens; audio, image and video tokens are counted only in their own fields.
INTEGER_QUANTITY_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "embedding_tokens",
    "images",
    "requests",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "cached_audio_tokens",
    "cache_write_audio_tokens",
    "input_image_tokens",
    "output_image_tokens",
    "cached_image_tokens",
    "input_video_tokens",
    "output_video_tokens",
    "input_characters",
    "output_characters",
    "input_images",
    "pixels",
    "pages",
    "web_searches",
    "maps_queries",
    "sessions",
    "messages",
    "citation_tokens",
    "guardrail_units",
)
DECIMAL_QUANTITY_FIELDS = ("seconds", "gpu_hours", "input_audio_seconds", "input_video_seconds", "credits")
# Everything the prompt carried, in tokens: what a context-size tier ("above 200k tokens") is chosen by.
PROMPT_TOKEN_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "cached_audio_tokens",
    "cache_write_audio_tokens",
    "input_image_tokens",
    "cached_image_tokens",
    "input_video_tokens",
)
TOKEN_FIELDS = INTEGER_QUANTITY_FIELDS[:6]


class Price(models.Model):
    """One version of a unit price. A new price closes the one in force instead of overwriting it.

    (provider, model, operation, unit, variant) identifies what is priced; valid_from/valid_until
    say when. At most one version of a key is open (valid_until empty): the catalog services
    enforce it by closing the open version at the new one's valid_from.
    """

    provider = models.CharField("provider", max_length=100, help_text="e.g. openai, anthropic, gemini, replicate.")
    model = models.CharField("model", max_length=200, help_text="The provider's model name, e.g. gpt-4o.")
    operation = models.CharField(
        "operation",
        max_length=50,
        blank=True,
        help_text="What the call does, as the catalog names it: chat, embedding, image_generation, "
        "audio_transcription ... Empty: any operation of the model.",
    )
    unit = models.CharField(
        "unit", max_length=30, choices=Unit.choices, help_text="What one unit is: a token, an image, a second ..."
    )
    variant = models.CharField(
        "variant",
        max_length=100,
        blank=True,
        help_text="Size/quality where the provider prices them separately, e.g. hd/1024-x-1792. Empty for most.",
    )
    service_tier = models.CharField(
        "service tier",
        max_length=20,
        blank=True,
        choices=ServiceTier.choices,
        help_text="The provider's service tier this price applies to (batch, flex, priority, ...). Empty: standard.",
    )
    above_tokens = models.PositiveBigIntegerField(
        "above tokens",
        default=0,
        help_text="A context-size tier: the price applies when the prompt has more than this many tokens "
        "(cached tokens included). 0: from the first token.",
    )
    off_peak_windows = models.JSONField(
        "off-peak windows",
        default=list,
        blank=True,
        help_text="Only for the off-peak service tier, which applies to standard-tier events inside these windows: "
        '[{"hours_utc": ["16:30-00:30"], "weekdays": [1, 2, 3, 4, 5]}] (weekdays 1 = Monday).',
    )
    unit_price = models.DecimalField(
        "unit price",
        max_digits=PRICE_MAX_DIGITS,
        decimal_places=PRICE_PLACES,
        help_text="The price of ONE unit: for a token price, per token (2.50 USD per 1M tokens is 0.0000025). "
        "The lists show token prices per 1M tokens.",
    )
    currency = models.CharField("currency", max_length=3, default="USD", help_text="ISO code, e.g. USD.")
    valid_from = models.DateTimeField("valid from", help_text="Events at or after this time use this price.")
    valid_until = models.DateTimeField(
        "valid until", null=True, blank=True, help_text="Empty while in force; set when a newer price replaces it."
    )
    source = models.CharField("source", max_length=200, blank=True, help_text="Where this price came from.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "model", "operation", "unit", "variant", "-valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "provider",
                    "model",
                    "operation",
                    "unit",
                    "variant",
                    "service_tier",
                    "above_tokens",
                    "valid_from",
                ],
                name="price_version_unique",
            ),
            # At most one version of a key is in force-until-further-notice.
            models.UniqueConstraint(
                fields=["provider", "model", "operation", "unit", "variant", "service_tier", "above_tokens"],
                condition=Q(valid_until__isnull=True),
                name="price_one_open_version",
            ),
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="price_unit_price_non_negative"),
            models.CheckConstraint(
                condition=Q(valid_until__isnull=True) | Q(valid_until__gt=models.F("valid_from")),
                name="price_validity_ordered",
            ),
        ]
        indexes = [
            # Pricing an event: prices of (provider, model) in force at the event's time.
            models.Index(fields=["provider", "model", "valid_from"], name="price_lookup_idx"),
        ]

    def __str__(self) -> str:
        what = f"{self.provider}/{self.model}"
        if self.operation:
            what += f" {self.operation}"
        if self.variant:
            what += f" [{self.variant}]"
        return f"{what}: {self.unit_price.normalize():f} {self.currency}/{self.unit}"


class Outcome(models.TextChoices):
    SUCCESS = "success", "success"
    ERROR = "error", "error"
    RATE_LIMITED = "rate_limited", "rate limited"


class PricingStatus(models.TextChoices):
    PRICED = "priced", "priced from the catalog"
    EXPLICIT = "explicit", "explicit amount"
    UNPRICED = "unpriced", "unpriced (no price in force)"


class CostEntry(models.Model):
    """The ledger: one row per billable event. Append-only; a correction is a new row.

    The database refuses UPDATEs of this table (a trigger, see migration 0002).
    """

    occurred_at = models.DateTimeField(
        "occurred at", db_index=True, help_text="When the call was made: the prices in force then priced it."
    )
    recorded_at = models.DateTimeField("recorded at", auto_now_add=True, help_text="When costcontrol received it.")
    provider = models.CharField("provider", max_length=100)
    model = models.CharField("model", max_length=200)
    operation = models.CharField(
        "operation", max_length=50, blank=True, help_text="What the call did: chat, embedding, GPU busy ..."
    )
    variant = models.CharField(
        "variant",
        max_length=100,
        blank=True,
        help_text="A size or quality the provider prices separately (hd/1024-x-1792); empty for most calls.",
    )
    service = models.CharField("service", max_length=100, blank=True, help_text="The application that made the call.")
    subject = models.CharField(
        "subject", max_length=200, blank=True, help_text="The end user or customer the call was for (their id)."
    )
    job = models.CharField(
        "job", max_length=200, blank=True, help_text="The batch run the call belongs to (its job id)."
    )
    team = models.ForeignKey(
        "core.Team",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="cost_entries",
        help_text="The team whose spend this is: its budgets count it and its staff see it.",
    )
    tags = models.JSONField(
        "tags", default=dict, blank=True, help_text="Labels the caller attached (key = value), e.g. feature = chat."
    )

    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cached_input_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    embedding_tokens = models.PositiveBigIntegerField(default=0)
    images = models.PositiveBigIntegerField(default=0)
    requests = models.PositiveBigIntegerField(default=0)
    seconds = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    gpu_hours = models.DecimalField(max_digits=18, decimal_places=9, default=0)

    cache_write_1h_tokens = models.PositiveBigIntegerField(default=0)
    input_audio_tokens = models.PositiveBigIntegerField(default=0)
    output_audio_tokens = models.PositiveBigIntegerField(default=0)
    cached_audio_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_audio_tokens = models.PositiveBigIntegerField(default=0)
    input_image_tokens = models.PositiveBigIntegerField(default=0)
    output_image_tokens = models.PositiveBigIntegerField(default=0)
    cached_image_tokens = models.PositiveBigIntegerField(default=0)
    input_video_tokens = models.PositiveBigIntegerField(default=0)
    output_video_tokens = models.PositiveBigIntegerField(default=0)
    input_characters = models.PositiveBigIntegerField(default=0)
    output_characters = models.PositiveBigIntegerField(default=0)
    input_images = models.PositiveBigIntegerField(default=0, help_text="Images in the prompt (billed per image).")
    pixels = models.PositiveBigIntegerField(default=0)
    pages = models.PositiveBigIntegerField(default=0)
    web_searches = models.PositiveBigIntegerField(default=0)
    maps_queries = models.PositiveBigIntegerField(default=0)
    input_audio_seconds = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    input_video_seconds = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    sessions = models.PositiveBigIntegerField(default=0, help_text="Code interpreter sessions (container model).")
    messages = models.PositiveBigIntegerField(default=0, help_text="Text messages in a voice session (xAI).")
    citation_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Tokens of the citations the provider added (Perplexity), besides the prompt."
    )
    guardrail_units = models.PositiveBigIntegerField(
        default=0, help_text="Guardrail policy text units (Bedrock); the policy is the variant."
    )
    credits = models.DecimalField(
        max_digits=18,
        decimal_places=6,
        default=0,
        help_text="Provider credits (Reducto OCR); billed instead of pages when the model prices credits.",
    )
    service_tier = models.CharField(
        "service tier", max_length=20, blank=True, help_text="The tier that served the call, as the provider said."
    )
    region = models.CharField(
        "region",
        max_length=50,
        blank=True,
        help_text="Where the provider processed the call, as it names it: OpenAI data residency (eu, us), "
        "Vertex AI location (us-central1, global), Anthropic inference_geo (us, global). Some prices are "
        "raised there.",
    )
    speed = models.CharField(
        "speed", max_length=20, blank=True, help_text="The speed the provider served the call at (Anthropic: fast)."
    )

    amount = MoneyField("amount", help_text="What the call cost, in the entry's currency.")
    currency = models.CharField("currency", max_length=3, default="USD")
    pricing_status = models.CharField(
        "pricing",
        max_length=10,
        choices=PricingStatus.choices,
        help_text="Where the amount came from: the price catalog, the event itself, or nowhere (no price in force).",
    )
    prices_used = models.JSONField(
        "prices used",
        default=dict,
        blank=True,
        help_text="The catalog prices that made the amount, part by part (a table on the entry's page).",
    )
    reported_amount = MoneyField(
        "reported cost",
        null=True,
        blank=True,
        help_text="The cost the sender's own tool computed for this call (LiteLLM's response_cost, a span's "
        "gen_ai.usage.cost.amount), in the entry's currency: kept as a cross-check, never used as the amount.",
    )
    reported_by = models.CharField(
        "reported by", max_length=50, blank=True, help_text="What computed the reported cost (litellm, an attribute)."
    )
    reported_differs = models.BooleanField(
        "reported cost differs",
        null=True,
        blank=True,
        help_text="Whether the reported cost differs from the amount by more than REPORTED_COST_TOLERANCE_PERCENT "
        "(judged when the entry was recorded); empty when nothing was reported.",
    )
    aggregated = models.BooleanField(
        "aggregated",
        default=False,
        help_text="Yes: the usage of many calls, summed by the sender (OpenTelemetry metrics), with no per-call "
        "detail: its outcome, duration and subject are those of the whole interval.",
    )
    is_estimate = models.BooleanField(
        "estimate",
        default=True,
        help_text="Yes: computed here from prices. No: an invoiced amount, as the provider billed it.",
    )
    outcome = models.CharField(
        "outcome",
        max_length=20,
        choices=Outcome.choices,
        default=Outcome.SUCCESS,
        help_text="How the call went; failed and rate-limited calls are recorded too.",
    )
    duration_ms = models.PositiveIntegerField(
        "duration (ms)", null=True, blank=True, help_text="How long the call took, as the caller reported it."
    )
    idempotency_key = models.CharField(
        "idempotency key",
        max_length=200,
        unique=True,
        help_text="The event's unique key: an event sent twice with the same key is recorded once.",
    )
    corrects = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="corrections",
        verbose_name="corrects",
        help_text="The entry this one corrects: a correction records the difference, the original stays.",
    )
    note = models.CharField("note", max_length=500, blank=True, help_text="Why a correction was made.")

    class Meta:
        verbose_name = "cost entry"
        verbose_name_plural = "cost entries"
        ordering = ["-occurred_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(seconds__gte=0), name="costentry_seconds_non_negative"),
            models.CheckConstraint(condition=Q(gpu_hours__gte=0), name="costentry_gpu_hours_non_negative"),
            # Only corrections may be negative (a refund or a lowered price).
            models.CheckConstraint(
                condition=Q(amount__gte=0) | Q(corrects__isnull=False), name="costentry_amount_non_negative"
            ),
        ]
        indexes = [
            # Admin change list filtered by provider/model, newest first.
            models.Index(fields=["provider", "model", "occurred_at"], name="costentry_provider_model_idx"),
        ]

    def __str__(self) -> str:
        amount = format_money_fine(self.amount, self.currency)  # as the admin's list shows it (6 places at most)
        return f"#{self.pk} {self.occurred_at:%Y-%m-%d %H:%M} {self.provider}/{self.model} {amount}"


class RollupCounters(models.Model):
    """What a rollup row counts (in ROLLUP_COUNTERS order); hourly and daily rollups share it."""

    scope = models.CharField(max_length=320)
    currency = models.CharField(max_length=3, default="USD")
    amount = MoneyField(default=0)
    events = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    rate_limited = models.BigIntegerField(default=0)
    unpriced = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    embedding_tokens = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class SpendRollup(RollupCounters):
    """Running totals of one scope in one UTC hour, maintained in the entry's own transaction.

    Scopes: global, provider:X, service:X, model:X, operation:X, subject:X, job:X, team:X, tag:K=V.
    Everything that asks "how much in this window" reads these rows (and SpendRollupDay for
    whole UTC days inside the window), never the ledger.
    """

    bucket = models.DateTimeField(help_text="Start of the UTC hour.")

    class Meta:
        verbose_name = "spend rollup"
        constraints = [
            # Also the index for "scope S between hours A and B" (scope first, then bucket).
            models.UniqueConstraint(fields=["scope", "bucket", "currency"], name="spendrollup_scope_bucket_unique"),
        ]
        indexes = [
            # Admin list newest hour first; "every scope in this window" (reports, dashboards).
            models.Index(fields=["bucket"], name="spendrollup_bucket_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} @ {self.bucket:%Y-%m-%d %H:00}: {format_money_fine(self.amount, self.currency)}"


class SpendRollupDay(RollupCounters):
    """The same totals per UTC day, written in the same transaction as the hourly rows
    (tracking.rollups.rollups_add; verify_ledger checks both). A window of many days reads one row per whole day
    and hourly rows only at its ragged ends: a monthly budget sums ~80 rows, not ~700."""

    bucket = models.DateTimeField(help_text="Start of the UTC day.")

    class Meta:
        verbose_name = "daily spend rollup"
        constraints = [
            models.UniqueConstraint(fields=["scope", "bucket", "currency"], name="spendrollupday_scope_bucket_unique"),
        ]
        indexes = [
            # "Every scope in these days" (dashboard, recommendations): a prefix LIKE on scope cannot
            # use the unique index under the C.UTF-8 collation, so without this it is a full scan.
            models.Index(fields=["bucket"], name="spendrollupday_bucket_idx"),
            # "Every provider, service or tag that spent" over a long span (the dashboard's filter
            # choices, 400 days): a prefix LIKE reads these index ranges, in any collation, instead of
            # every daily row. Rollup updates change no indexed column, so they stay HOT updates; a
            # row is added to it once per scope and day. (PostgreSQL; other databases ignore opclasses.)
            models.Index(fields=["scope"], name="spendrollupday_scope_like", opclasses=["varchar_pattern_ops"]),
        ]

    def __str__(self) -> str:
        return f"{self.scope} @ {self.bucket:%Y-%m-%d}: {format_money_fine(self.amount, self.currency)}"


# The counters a rollup row carries, in a fixed order (the upsert SQL and verify_ledger use it).
ROLLUP_COUNTERS = (
    "amount",
    "events",
    "errors",
    "rate_limited",
    "unpriced",
    *TOKEN_FIELDS,
)


# --- GPU -----------------------------------------------------------------------------------


class GpuDevice(models.Model):
    """A GPU the sampler has seen through NVML, identified by its UUID (stable across reboots and hosts)."""

    uuid = models.CharField(
        "UUID",
        max_length=100,
        unique=True,
        help_text="NVML's device UUID (GPU-...). Its ledger entries carry the tag gpu=UUID.",
    )
    name = models.CharField(
        "name",
        max_length=200,
        help_text="As NVML reports it, e.g. NVIDIA H100 80GB HBM3. The model of its ledger entries: a catalog "
        "price for provider gpu and this model (unit GPU-hour) prices it.",
    )
    memory_total = models.PositiveBigIntegerField("memory total (bytes)")
    first_seen = models.DateTimeField("first seen")
    last_seen = models.DateTimeField("last seen")

    class Meta:
        verbose_name = "GPU device"
        ordering = ["name", "uuid"]

    def __str__(self) -> str:
        return f"{self.name} ({self.uuid})"


class GpuSample(models.Model):
    """One NVML reading of one device and, in burst mode, the GPU time it billed.

    The time since the device's previous sample (at most two sampling intervals) is split by
    the sampled utilisation into busy and idle GPU-hours: two ledger entries, gpu_busy and gpu_idle.
    """

    device = models.ForeignKey(GpuDevice, on_delete=models.PROTECT, related_name="samples", verbose_name="device")
    sampled_at = models.DateTimeField("sampled at")
    utilisation_percent = models.PositiveSmallIntegerField(
        "utilisation (%)", help_text="How busy the GPU was: the share of the driver's last sampling period it ran work."
    )
    memory_used = models.PositiveBigIntegerField("memory used (bytes)")
    memory_total = models.PositiveBigIntegerField("memory total (bytes)")
    power_watts = models.DecimalField(
        "power (W)",
        max_digits=9,
        decimal_places=3,
        null=True,
        blank=True,
        help_text="Empty where the driver cannot tell.",
    )
    processes = models.JSONField(
        "compute processes",
        default=list,
        blank=True,
        help_text="The processes using the GPU (process id, memory), where the driver tells.",
    )
    elapsed_seconds = models.DecimalField(
        "elapsed (s)",
        max_digits=18,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Time since the device's previous sample; empty for its first.",
    )
    billed = models.BooleanField("billed", default=False, help_text="Whether this sample produced ledger entries.")
    busy_gpu_hours = models.DecimalField("busy GPU-hours", max_digits=18, decimal_places=9, default=0)
    idle_gpu_hours = models.DecimalField("idle GPU-hours", max_digits=18, decimal_places=9, default=0)
    amount = MoneyField("cost", default=0)
    currency = models.CharField("currency", max_length=3, default="USD")
    entry_keys = models.JSONField(
        "ledger entry keys", default=list, blank=True, help_text="The keys of the ledger entries this sample billed."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "GPU sample"
        ordering = ["-sampled_at", "-id"]
        constraints = [
            # Also the index for "this device's latest sample before T" (the sampler's previous sample).
            models.UniqueConstraint(fields=["device", "sampled_at"], name="gpusample_device_time_unique"),
            models.CheckConstraint(condition=Q(utilisation_percent__lte=100), name="gpusample_utilisation_percent"),
        ]
        indexes = [
            # Admin list of every device's samples, newest first.
            models.Index(fields=["sampled_at"], name="gpusample_sampled_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.device.name} @ {self.sampled_at:%Y-%m-%d %H:%M}: {self.utilisation_percent} %"


class GpuSettings(models.Model):
    """The one row (pk=1) of GPU settings edited in the admin; set here, they win over the environment."""

    BURST_CHOICES = [(None, "follow GPU_BURST (environment)"), (True, "on"), (False, "off")]

    burst = models.BooleanField(
        "GPU burst mode",
        null=True,
        blank=True,
        default=None,
        choices=BURST_CHOICES,
        help_text="On: sampled GPU time becomes ledger entries (busy and idle GPU-hours). Off: samples are "
        "stored, nothing is billed. Follow: the GPU_BURST environment variable decides. Takes effect from "
        "the next sample.",
    )
    updated_at = models.DateTimeField("updated at", auto_now=True)

    class Meta:
        verbose_name = "GPU settings"
        verbose_name_plural = "GPU settings"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="gpusettings_singleton")]

    def __str__(self) -> str:
        return "GPU settings"


# --- batches -------------------------------------------------------------------------------------


class Batch(ExportModelOperationsMixin("batch"), models.Model):
    """One run of a pipeline that produces leads. Entries recorded with its job id belong to it.

    Opened with tracking.batches.batch_start, closed with batch_finish; the cost figures are
    computed after the close (batch_cost_compute) from the job's rollups.
    """

    name = models.CharField("pipeline", max_length=200, help_text="The pipeline, e.g. nightly-leads.")
    job = models.CharField(
        "job id", max_length=200, unique=True, help_text="Record usage with this job id to charge it to the batch."
    )
    started_at = models.DateTimeField("started at", default=timezone.now)
    finished_at = models.DateTimeField("finished at", null=True, blank=True)
    leads = models.PositiveBigIntegerField("leads", null=True, blank=True)
    cost = MoneyField("cost", null=True, blank=True)
    cost_per_lead = MoneyField("cost per lead", null=True, blank=True, help_text="Empty: undefined (no leads).")
    month_cost = MoneyField("month-to-date cost", null=True, blank=True)
    month_leads = models.PositiveBigIntegerField("month-to-date leads", null=True, blank=True)
    month_cost_per_lead = MoneyField("month-to-date cost per lead", null=True, blank=True)
    cost_computed_at = models.DateTimeField("cost computed at", null=True, blank=True)
    note = models.CharField("note", max_length=500, blank=True)
    service = models.CharField(
        "service",
        max_length=60,
        blank=True,
        default="",
        help_text="The service whose API key started it: only that service's keys start its pipeline again "
        "or finish it. Empty: started in process or from the command line.",
    )

    class Meta:
        verbose_name_plural = "batches"
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=Q(finished_at__isnull=True), name="batch_one_running_per_pipeline"
            ),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True) | Q(finished_at__gte=models.F("started_at")),
                name="batch_finishes_after_it_starts",
            ),
        ]
        indexes = [models.Index(fields=["finished_at"], name="batch_finished_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.job})"


# --- metrics: lifetime totals per series --------------------------------------------------------

# Upper bounds (milliseconds) of the request-duration histogram that MetricSeries keeps, as
# costcontrol_request_duration_seconds exports it (+Inf is duration_count). Changing them needs a
# migration of the duration_le_* columns and `manage.py rebuild_rollups`.
DURATION_BUCKETS_MS = (100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000)
DURATION_BUCKET_FIELDS = tuple(f"duration_le_{bound}" for bound in DURATION_BUCKETS_MS)


class MetricSeries(models.Model):
    """Lifetime totals of one (provider, service, operation, model, currency): the counters and the
    request-duration histogram that /metrics exports, kept by the record path itself.

    Written in the same transaction as the ledger row and its rollups, after them
    (tracking.rollups.rollups_add), so every process's scrape sees what any worker recorded, exactly
    once, without reading the ledger. verify_ledger recomputes these rows from the ledger and
    rebuild_rollups rewrites them. Counters as in the rollups (a correction adds its amount but is
    not another request); the histogram counts requests that reported a duration: cumulative
    buckets duration_le_<ms> (observations <= the bound), their number and their sum (ms).
    """

    provider = models.CharField(max_length=100)
    service = models.CharField(max_length=100, blank=True)
    operation = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, default="USD")
    amount = MoneyField(default=0)
    events = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    rate_limited = models.BigIntegerField(default=0)
    unpriced = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    embedding_tokens = models.BigIntegerField(default=0)
    duration_count = models.BigIntegerField(default=0)
    duration_sum_ms = models.BigIntegerField(default=0)
    duration_le_100 = models.BigIntegerField(default=0)
    duration_le_250 = models.BigIntegerField(default=0)
    duration_le_500 = models.BigIntegerField(default=0)
    duration_le_1000 = models.BigIntegerField(default=0)
    duration_le_2500 = models.BigIntegerField(default=0)
    duration_le_5000 = models.BigIntegerField(default=0)
    duration_le_10000 = models.BigIntegerField(default=0)
    duration_le_30000 = models.BigIntegerField(default=0)
    duration_le_60000 = models.BigIntegerField(default=0)
    duration_le_120000 = models.BigIntegerField(default=0)
    duration_le_300000 = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "metric series"
        verbose_name_plural = "metric series"
        constraints = [
            # The record path's upsert (ON CONFLICT on these columns); the scrape reads the whole table.
            models.UniqueConstraint(
                fields=["provider", "service", "operation", "model", "currency"], name="metricseries_key_unique"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.provider}/{self.service}/{self.operation}/{self.model}: {format_money(self.amount, self.currency)}"
        )


SERIES_KEY = ("provider", "service", "operation", "model", "currency")
# The counters a MetricSeries row carries, in a fixed order (the upserts and verify_ledger use it).
SERIES_COUNTERS = (*ROLLUP_COUNTERS, "duration_count", "duration_sum_ms", *DURATION_BUCKET_FIELDS)


# --- what the providers billed (beside the ledger, never in it) --------------------------------------


class BillingSource(models.Model):
    """Where the providers' own figures come from: an organization cost API pulled daily with an admin
    key, or invoice lines uploaded as CSV. Its rows (BilledCost) sit beside the ledger for the drift
    between metered and billed spend; they never enter the ledger or its rollups."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI organization Costs API"
        ANTHROPIC = "anthropic", "Anthropic Admin API cost report"
        CSV = "csv", "CSV invoice lines (uploaded)"

    name = models.CharField("name", max_length=100, unique=True, help_text="e.g. OpenAI production organization.")
    kind = models.CharField("kind", max_length=20, choices=Kind.choices)
    provider = models.CharField(
        "provider",
        max_length=100,
        help_text="The ledger's provider whose metered spend these bills are compared with (openai, anthropic ...).",
    )
    api_url = models.URLField("API address", blank=True, help_text="Empty: the provider's own API.")
    admin_key_encrypted = models.TextField(blank=True, editable=False)
    admin_key_file = models.CharField(
        "admin key file",
        max_length=300,
        blank=True,
        help_text="A file holding the admin key (a mounted secret), read at each pull; instead of storing the key.",
    )
    enabled = models.BooleanField("pulled daily", default=True)
    days_back = models.PositiveSmallIntegerField(
        "days re-read",
        default=3,
        help_text="Each pull reads again this many closed days: providers complete a day's costs late.",
    )
    last_attempt_at = models.DateTimeField("last pull", null=True, blank=True, editable=False)
    last_success_at = models.DateTimeField("last successful pull", null=True, blank=True, editable=False)
    last_error = models.TextField("last error", blank=True, editable=False)

    class Meta:
        verbose_name = "billing source"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BilledCost(models.Model):
    """One line of what a provider billed for a UTC day (per model, and project, workspace or key where it
    says), as its cost API or invoice reported it. A day's lines are replaced whole by a later import."""

    source = models.ForeignKey(BillingSource, on_delete=models.CASCADE, related_name="costs")
    day = models.DateField("day (UTC)")
    provider = models.CharField("provider", max_length=100)
    model = models.CharField("model", max_length=200, blank=True)
    account = models.CharField(
        "project / workspace / key", max_length=200, blank=True, help_text="As the provider names it."
    )
    description = models.CharField("line item", max_length=300, blank=True)
    currency = models.CharField("currency", max_length=3)
    amount = MoneyField("billed")
    imported_at = models.DateTimeField("imported at", auto_now_add=True)

    class Meta:
        verbose_name = "billed cost"
        ordering = ["-day", "provider", "model"]
        indexes = [models.Index(fields=["provider", "day"], name="billedcost_provider_day_idx")]

    def __str__(self) -> str:
        return f"{self.day} {self.provider}/{self.model or '-'} {format_money(self.amount, self.currency)}"


class BillingDay(models.Model):
    """How the import of one source's day went: ok (its lines are in BilledCost) or failed (nothing of
    that day changed; the message says why; the next pull tries again).

    status, message and attempted_at are the last attempt's; lines and imported_at describe the lines
    stored (a failed re-read keeps the lines of the last good import, and imported_at stays set). A day
    with status ok is complete as the provider reported it at imported_at; a day without a row was never
    read (tracking/billing.py)."""

    class Status(models.TextChoices):
        OK = "ok", "imported"
        FAILED = "failed", "failed"

    source = models.ForeignKey(BillingSource, on_delete=models.CASCADE, related_name="days")
    day = models.DateField("day (UTC)")
    status = models.CharField("status", max_length=10, choices=Status.choices)
    message = models.TextField("message", blank=True)
    lines = models.PositiveIntegerField("lines", default=0)
    attempted_at = models.DateTimeField("tried at")
    imported_at = models.DateTimeField("imported at", null=True, blank=True)

    class Meta:
        verbose_name = "billing import"
        ordering = ["-day"]
        constraints = [models.UniqueConstraint(fields=["source", "day"], name="billingday_source_day_unique")]

    def __str__(self) -> str:
        return f"{self.source} {self.day}: {self.get_status_display()}"
