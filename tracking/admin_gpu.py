"""The admin of GPU cost: the devices NVML found, their samples (utilisation, memory, power, what each billed) and the
GPU settings (burst mode, the hourly price). Registered when tracking.admin is imported."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from . import admin_billing  # noqa: F401  (billing sources, days and billed lines)
from .admin_display import EMPTY, LIST_PER_PAGE, _change_url, _right, _sub, duration_words, money_fine
from .gpu import gpu_burst_source, gpu_settings_ensure, gpu_settings_update
from .models import (
    GpuDevice,
    GpuSample,
    GpuSettings,
)


def _gib(value: int | None) -> str:
    return EMPTY if value is None else f"{Decimal(value) / Decimal(2**30):,.1f} GiB"


def _watts(value: Decimal) -> str:
    return f"{value.quantize(Decimal(1)):,} W"


def _hours(value: Decimal) -> str:
    """GPU-hours to 2 places (0.79)."""
    return f"{value.quantize(Decimal('0.01')):,}"


@admin.register(GpuDevice)
class GpuDeviceAdmin(admin.ModelAdmin):
    """Devices appear when the sampler first sees them; what NVML says is not edited here."""

    list_display = ("name", "uuid", "last_utilisation", "memory_total_display", "first_seen", "last_seen")
    search_fields = ("name", "uuid")
    list_per_page = LIST_PER_PAGE
    fields = ("name", "uuid", "memory_total_display", "first_seen", "last_seen", "samples_link")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[GpuDevice]:
        # One subquery per page row, on the (device, sampled_at) unique index.
        latest = GpuSample.objects.filter(device=OuterRef("pk")).order_by("-sampled_at")
        return (
            super()
            .get_queryset(request)
            .annotate(last_utilisation_percent=Subquery(latest.values("utilisation_percent")[:1]))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: GpuDevice | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: GpuDevice | None = None) -> bool:
        return False  # its samples are history (and name the ledger entries they produced)

    @admin.display(description="last utilisation", ordering="last_utilisation_percent")
    def last_utilisation(self, obj: GpuDevice) -> str:
        value = getattr(obj, "last_utilisation_percent", None)
        return EMPTY if value is None else _right(f"{value}%")

    @admin.display(description="memory", ordering="memory_total")
    def memory_total_display(self, obj: GpuDevice) -> str:
        return _gib(obj.memory_total)

    @admin.display(description="samples")
    def samples_link(self, obj: GpuDevice) -> str:
        url = reverse("admin:tracking_gpusample_changelist") + f"?device__id__exact={obj.pk}"
        return format_html('<a href="{}">{} samples</a>', url, obj.samples.count())


@admin.register(GpuSample)
class GpuSampleAdmin(admin.ModelAdmin):
    """Read-only: written by the sampler (beat task tracking.gpu_sample or `manage.py track_gpu_usage`)."""

    # At 1440 px beside the filters: memory, power and processes under the utilisation; busy and idle
    # GPU-hours together; "not billed" in the cost column.
    list_display = ("sampled_at", "device_shown", "utilisation", "elapsed_shown", "gpu_hours", "amount_display")
    list_filter = ("billed", "device", "sampled_at")
    list_select_related = ("device",)
    show_full_result_count = False
    list_per_page = LIST_PER_PAGE
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "device",
                    "sampled_at",
                    "utilisation_detail",
                    "memory_display",
                    "power_shown",
                    "processes_shown",
                )
            },
        ),
        (
            "Billing",
            {
                "fields": (
                    "elapsed_detail",
                    "billed",
                    "busy_hours_shown",
                    "idle_hours_shown",
                    "amount_detail",
                    "entries_link",
                )
            },
        ),
    )
    readonly_fields = (
        "utilisation_detail",
        "memory_display",
        "power_shown",
        "processes_shown",
        "elapsed_detail",
        "busy_hours_shown",
        "idle_hours_shown",
        "amount_detail",
        "entries_link",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: GpuSample | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: GpuSample | None = None) -> bool:
        return False

    @admin.display(description="device", ordering="device__name")
    def device_shown(self, obj: GpuSample) -> str:
        return format_html('<span title="{}">{}</span>', obj.device.uuid, obj.device.name)

    @admin.display(description="utilisation", ordering="utilisation_percent")
    def utilisation(self, obj: GpuSample) -> str:
        notes = [f"{_gib(obj.memory_used)} of {_gib(obj.memory_total)}"]
        if obj.power_watts is not None:
            notes.append(_watts(obj.power_watts))
        if obj.processes:
            count = len(obj.processes)
            notes.append(f"{count:,} process{'es' if count != 1 else ''}")
        return format_html("{}{}", f"{obj.utilisation_percent} %", _sub(" · ".join(notes)))

    @admin.display(description="utilisation")
    def utilisation_detail(self, obj: GpuSample) -> str:
        return f"{obj.utilisation_percent} %"

    @admin.display(description="memory used / total")
    def memory_display(self, obj: GpuSample) -> str:
        return f"{_gib(obj.memory_used)} / {_gib(obj.memory_total)}"

    @admin.display(description="power")
    def power_shown(self, obj: GpuSample) -> str:
        return EMPTY if obj.power_watts is None else _watts(obj.power_watts)

    @admin.display(description="compute processes")
    def processes_shown(self, obj: GpuSample) -> str:
        processes = [p for p in obj.processes or [] if isinstance(p, dict)]
        if not processes:
            return "none seen"
        return format_html(
            '<table class="cc-processes"><thead><tr><th>process id</th><th>GPU memory</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            format_html_join(
                "",
                '<tr><td>{}</td><td style="text-align:right">{}</td></tr>',
                ((p.get("pid", EMPTY), _gib(p.get("used_memory"))) for p in processes),
            ),
        )

    @admin.display(description="elapsed", ordering="elapsed_seconds")
    def elapsed_shown(self, obj: GpuSample) -> str:
        return EMPTY if obj.elapsed_seconds is None else _right(duration_words(obj.elapsed_seconds))

    @admin.display(description="elapsed since the previous sample")
    def elapsed_detail(self, obj: GpuSample) -> str:
        if obj.elapsed_seconds is None:
            return "- (the device's first sample)"
        return f"{duration_words(obj.elapsed_seconds)} ({int(obj.elapsed_seconds):,} s)"

    @admin.display(description="GPU-hours busy / idle", ordering="busy_gpu_hours")
    def gpu_hours(self, obj: GpuSample) -> str:
        if not obj.billed:
            return EMPTY
        return format_html(
            "{}{}", _right(f"{_hours(obj.busy_gpu_hours)} busy"), _right(f"{_hours(obj.idle_gpu_hours)} idle")
        )

    @admin.display(description="busy GPU-hours")
    def busy_hours_shown(self, obj: GpuSample) -> str:
        return _hours(obj.busy_gpu_hours)

    @admin.display(description="idle GPU-hours")
    def idle_hours_shown(self, obj: GpuSample) -> str:
        return _hours(obj.idle_gpu_hours)

    @admin.display(description="cost", ordering="amount")
    def amount_display(self, obj: GpuSample) -> str:
        if not obj.billed:
            return format_html('<span class="cc-sub">{}</span>', "not billed")
        return _right(money_fine(obj.amount, obj.currency))

    @admin.display(description="cost")
    def amount_detail(self, obj: GpuSample) -> str:
        return money_fine(obj.amount, obj.currency) if obj.billed else "not billed"

    @admin.display(description="ledger entries")
    def entries_link(self, obj: GpuSample) -> str:
        if not obj.entry_keys:
            return EMPTY
        # The two keys share the prefix gpu:<uuid>:<time>: and the ledger list searches idempotency keys.
        prefix = obj.entry_keys[0].rsplit(":", 1)[0]
        url = reverse("admin:tracking_costentry_changelist") + "?" + urlencode({"q": prefix})
        return format_html('<a href="{}">{} entries</a>', url, len(obj.entry_keys))


class GpuSettingsForm(forms.ModelForm):
    burst = forms.TypedChoiceField(
        label="GPU burst mode",
        choices=[("", "follow GPU_BURST (environment)"), ("on", "on"), ("off", "off")],
        coerce=lambda value: value == "on",
        empty_value=None,
        required=False,
        help_text=GpuSettings._meta.get_field("burst").help_text,
    )

    class Meta:
        model = GpuSettings
        fields = ("burst",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        burst = self.instance.burst if self.instance.pk else None
        self.initial["burst"] = "" if burst is None else ("on" if burst else "off")


@admin.register(GpuSettings)
class GpuSettingsAdmin(admin.ModelAdmin):
    """One row: the list opens it directly. Set here, burst mode wins over GPU_BURST."""

    form = GpuSettingsForm
    fields = ("burst", "effective", "updated_at")
    readonly_fields = ("effective", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: GpuSettings | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return HttpResponseRedirect(_change_url(gpu_settings_ensure()))

    @admin.display(description="in effect")
    def effective(self, obj: GpuSettings) -> str:
        return f"GPU burst mode is {gpu_burst_source()}."

    def save_model(self, request: HttpRequest, obj: GpuSettings, form: forms.ModelForm, change: bool) -> None:
        saved = gpu_settings_update(burst=form.cleaned_data["burst"])
        obj.burst, obj.updated_at = saved.burst, saved.updated_at

    def response_change(self, request: HttpRequest, obj: GpuSettings) -> HttpResponse:
        self.message_user(request, f"GPU burst mode is {gpu_burst_source()}; applies from the next sample.")
        return HttpResponseRedirect(_change_url(obj))
