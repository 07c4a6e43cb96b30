"""GPU cost: every GPU read through NVML, one sample per device, and in burst mode ledger entries.

The sampler (:func:`gpu_usage_sample`, run by the beat task ``tracking.gpu_sample`` or by
``manage.py track_gpu_usage``) reads every device through NVML (the ``nvidia-ml-py`` package,
imported as ``pynvml``, only inside :func:`nvml_load`), then for each device stores a
:class:`~tracking.models.GpuSample` and, while burst mode is on, turns the time since that
device's previous sample into two ledger entries through ``cost_entry_record_many``:

- ``gpu_busy``: elapsed x utilisation / 100 GPU-hours, ``gpu_idle``: the rest. A budget sees
  the whole cost; a report can show what the idle part cost.
- provider ``gpu``, model = the device name as NVML reports it, service ``gpu``, tag
  ``gpu=<uuid>``, job = :func:`gpu_current_job`.
- price: the catalog's GPU-hour price for (gpu, device name) in force at the sample's time;
  without one, an explicit amount at ``GPU_BURST_COST_DOLLARS`` USD per GPU-hour (an estimate).
- idempotency keys ``gpu:<uuid>:<sample time>:busy|idle``: a sample recorded again counts once.

The first sample of a device bills nothing; a gap of more than two sampling intervals is billed
as two intervals (and logged): a sampler that was down does not bill its whole outage as a burst.
No NVML (not installed, no driver, no GPU, no permission): one log line, nothing recorded.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from types import ModuleType
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from core.money import format_money, round_money

from .models import GpuDevice, GpuSample, GpuSettings, PricingStatus
from .pricing import PriceBook
from .services import cost_entry_record_many

logger = logging.getLogger(__name__)

GPU_PROVIDER = "gpu"
GPU_SERVICE = "gpu"
GPU_TAG = "gpu"
OPERATION_BUSY = "gpu_busy"
OPERATION_IDLE = "gpu_idle"
GPU_SAMPLE_TASK = "tracking.gpu_sample"
NVML_UNAVAILABLE = "NVML not available"

HOURS_QUANTUM = Decimal("1E-9")  # CostEntry.gpu_hours has 9 places
_MICROSECONDS_PER_HOUR = Decimal(3_600_000_000)
MAX_GAP_INTERVALS = 2


# --- NVML: the boundary ------------------------------------------------------------------------


def nvml_load() -> ModuleType:
    """The one place pynvml (package nvidia-ml-py) is imported: lazily, so the app runs without it.

    Tests put a fake module in ``sys.modules["pynvml"]`` or pass ``nvml=`` to the sampler.
    """
    return importlib.import_module("pynvml")


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int | None  # bytes; None where NVML cannot say (e.g. Windows WDDM, some containers)


@dataclass(frozen=True)
class GpuReading:
    """What NVML said about one device."""

    index: int
    uuid: str
    name: str
    utilisation_percent: int
    memory_used: int
    memory_total: int
    power_watts: Decimal | None
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True)
class GpuReadResult:
    readings: list[GpuReading] = field(default_factory=list)
    unavailable: str | None = None  # "NVML not available: ..." when nothing could be read
    skipped: list[str] = field(default_factory=list)  # one line per device that could not be read


def _text(value: Any) -> str:
    # nvidia-ml-py returns str; older bindings returned bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _optional(nvml: ModuleType, call: Any, handle: Any) -> Any:
    """A reading NVML may refuse on some devices (NotSupported, NoPermission, ...): None then.

    A lost GPU is not a refusal: that error skips the whole device.
    """
    lost = getattr(nvml, "NVMLError_GpuIsLost", None)
    try:
        return call(handle)
    except nvml.NVMLError as exc:
        if lost is not None and isinstance(exc, lost):
            raise
        return None


def _device_read(nvml: ModuleType, index: int) -> GpuReading:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    uuid = _text(nvml.nvmlDeviceGetUUID(handle))
    name = _text(nvml.nvmlDeviceGetName(handle))
    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    milliwatts = _optional(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
    running = _optional(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
    processes = tuple(
        GpuProcess(
            pid=int(p.pid),
            used_memory=int(p.usedGpuMemory) if getattr(p, "usedGpuMemory", None) is not None else None,
        )
        for p in running
    )
    return GpuReading(
        index=index,
        uuid=uuid,
        name=name,
        utilisation_percent=min(max(int(rates.gpu), 0), 100),
        memory_used=int(memory.used),
        memory_total=int(memory.total),
        power_watts=None if milliwatts is None else Decimal(int(milliwatts)).scaleb(-3),
        processes=processes,
    )


def gpu_devices_read(*, nvml: ModuleType | None = None) -> GpuReadResult:
    """Read every GPU. Never raises for NVML's sake.

    NVML missing or failing at start: one log line "NVML not available: ...", no readings.
    One device failing (a lost GPU): one log line naming it; the others are read.
    NVML is shut down after every successful init.
    """
    if nvml is None:
        try:
            nvml = nvml_load()
        except ImportError as exc:
            return _unavailable(f"the nvidia-ml-py package is not installed ({exc})")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return _unavailable(_error_text(exc))
    readings: list[GpuReading] = []
    skipped: list[str] = []
    try:
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            return _unavailable(f"cannot count devices: {_error_text(exc)}")
        for index in range(count):
            try:
                readings.append(_device_read(nvml, index))
            except nvml.NVMLError as exc:
                line = f"GPU {index} skipped: {_error_text(exc)}"
                logger.warning(line)
                skipped.append(line)
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            logger.warning("NVML shutdown failed: %s", _error_text(exc))
    return GpuReadResult(readings=readings, skipped=skipped)


def _unavailable(reason: str) -> GpuReadResult:
    line = f"{NVML_UNAVAILABLE}: {reason}; no GPU sampled, nothing recorded"
    logger.warning(line)
    return GpuReadResult(unavailable=line)


# --- settings and selectors ---------------------------------------------------------------------


def gpu_current_job() -> str:
    """The job (batch id) GPU time is attributed to: the one batch running now, if exactly one is."""
    from .batches import batch_running_job

    return batch_running_job()


def gpu_burst_enabled() -> bool:
    """Burst mode as it applies now: the admin's setting if one is made, else GPU_BURST."""
    burst = GpuSettings.objects.filter(pk=1).values_list("burst", flat=True).first()
    return settings.GPU_BURST if burst is None else burst


def gpu_burst_source() -> str:
    """Where the effective burst mode comes from, in words (admin, command summary)."""
    burst = GpuSettings.objects.filter(pk=1).values_list("burst", flat=True).first()
    if burst is None:
        return f"{'on' if settings.GPU_BURST else 'off'} (follows GPU_BURST={int(settings.GPU_BURST)})"
    return f"{'on' if burst else 'off'} (set in the admin; GPU_BURST={int(settings.GPU_BURST)} is ignored)"


def gpu_sample_interval_seconds() -> Decimal:
    """The beat entry's interval as edited in the admin, else GPU_USAGE_CHECK_INTERVAL_SECONDS."""
    task = (
        PeriodicTask.objects.filter(task=GPU_SAMPLE_TASK, enabled=True, interval__isnull=False)
        .select_related("interval")
        .order_by("pk")
        .first()
    )
    if task is not None and task.interval is not None:
        every = timedelta(**{task.interval.period: task.interval.every})
        if every > timedelta(0):
            return Decimal(every // timedelta(microseconds=1)).scaleb(-6)
    return Decimal(settings.GPU_USAGE_CHECK_INTERVAL_SECONDS)


# --- services -----------------------------------------------------------------------------------


def gpu_settings_ensure() -> GpuSettings:
    """The settings row, created (following the environment) if missing."""
    row, _ = GpuSettings.objects.get_or_create(pk=1)
    return row


def gpu_settings_update(*, burst: bool | None) -> GpuSettings:
    """Set burst mode: True (on), False (off) or None (follow GPU_BURST). Applies from the next sample."""
    if burst not in (None, True, False):
        raise ValidationError({"burst": f"must be on, off or follow the environment, got {burst!r}"})
    row, _ = GpuSettings.objects.update_or_create(pk=1, defaults={"burst": burst})
    return row


class GpuBillingError(Exception):
    """A device's GPU time could not be recorded; its sample is not stored (the next one bills the time)."""


def gpu_entry_key(*, uuid: str, sampled_at: datetime, operation: str) -> str:
    """The idempotency key of one of a sample's entries: the same sample recorded again counts once."""
    kind = "busy" if operation == OPERATION_BUSY else "idle"
    return f"gpu:{uuid}:{sampled_at.astimezone(UTC).isoformat()}:{kind}"


def _plain(value: Decimal) -> str:
    """18000, not 1.8E+4."""
    return f"{value.normalize():f}"


def _hours(microseconds: int) -> Decimal:
    return (Decimal(microseconds) / _MICROSECONDS_PER_HOUR).quantize(HOURS_QUANTUM, rounding=ROUND_HALF_EVEN)


def gpu_hours_split(*, elapsed: timedelta, utilisation_percent: int) -> tuple[Decimal, Decimal]:
    """(busy, idle) GPU-hours of an interval: busy = elapsed x utilisation / 100, idle = the rest (exactly)."""
    total = _hours(elapsed // timedelta(microseconds=1))
    busy = (total * utilisation_percent / 100).quantize(HOURS_QUANTUM, rounding=ROUND_HALF_EVEN)
    return busy, total - busy


def _gpu_events(*, reading: GpuReading, sampled_at: datetime, busy: Decimal, idle: Decimal) -> list[dict[str, Any]]:
    """The two ledger events of a billed interval, priced from the catalog or at GPU_BURST_COST_DOLLARS."""
    book = PriceBook.load([(GPU_PROVIDER, reading.name)])
    job = gpu_current_job()
    events = []
    for operation, hours in ((OPERATION_BUSY, busy), (OPERATION_IDLE, idle)):
        event: dict[str, Any] = {
            "provider": GPU_PROVIDER,
            "model": reading.name,
            "operation": operation,
            "service": GPU_SERVICE,
            "job": job,
            "tags": {GPU_TAG: reading.uuid},
            "gpu_hours": hours,
            "occurred_at": sampled_at,
            "idempotency_key": gpu_entry_key(uuid=reading.uuid, sampled_at=sampled_at, operation=operation),
        }
        quote = book.quote(
            provider=GPU_PROVIDER,
            model=reading.name,
            operation=operation,
            variant="",
            at=sampled_at,
            quantities={"gpu_hours": Decimal(1)},
        )
        if quote.status != PricingStatus.PRICED:
            # No catalog price for this device model: the configured burst rate, as an estimate.
            event.update(amount=round_money(hours * settings.GPU_BURST_COST_DOLLARS), currency="USD", is_estimate=True)
        events.append(event)
    return events


@dataclass(frozen=True)
class GpuSampleResult:
    sample: GpuSample
    created: bool  # False: this device was already sampled at this time (nothing new recorded)
    capped_from: Decimal | None = None  # the elapsed seconds when the gap was capped
    not_billed: str = ""  # why nothing was billed, in words


def gpu_sample_record(
    *, reading: GpuReading, sampled_at: datetime, interval_seconds: Decimal | int, burst: bool
) -> GpuSampleResult:
    """Store one device's sample and, in burst mode, bill the time since its previous sample.

    One transaction, holding the device's row lock (PostgreSQL), so two samplers (the beat task
    and track_gpu_usage) never bill the same stretch of time twice. Raises GpuBillingError if
    the entries are refused; nothing is stored then.
    """
    interval = Decimal(interval_seconds)
    if interval <= 0:
        raise ValidationError({"interval_seconds": f"must be positive, got {interval_seconds}"})
    with transaction.atomic():
        device, _ = GpuDevice.objects.get_or_create(
            uuid=reading.uuid,
            defaults={
                "name": reading.name,
                "memory_total": reading.memory_total,
                "first_seen": sampled_at,
                "last_seen": sampled_at,
            },
        )
        device = GpuDevice.objects.select_for_update().get(pk=device.pk)
        existing = GpuSample.objects.filter(device=device, sampled_at=sampled_at).first()
        if existing is not None:
            return GpuSampleResult(existing, created=False, not_billed="already sampled at this time")
        later = GpuSample.objects.filter(device=device, sampled_at__gt=sampled_at).exists()
        previous = GpuSample.objects.filter(device=device, sampled_at__lt=sampled_at).order_by("-sampled_at").first()

        sample = GpuSample(
            device=device,
            sampled_at=sampled_at,
            utilisation_percent=reading.utilisation_percent,
            memory_used=reading.memory_used,
            memory_total=reading.memory_total,
            power_watts=reading.power_watts,
            processes=[{"pid": p.pid, "used_memory": p.used_memory} for p in reading.processes],
        )
        capped_from: Decimal | None = None
        not_billed = ""
        if later:
            # Another sampler already covered this time with a later sample: record the reading only.
            not_billed = "a later sample covers this time"
            logger.info("GPU %s: a later sample exists; %s is stored without billing", reading.uuid, sampled_at)
        elif previous is None:
            not_billed = "first sample of this device"
        else:
            elapsed = sampled_at - previous.sampled_at
            sample.elapsed_seconds = Decimal(elapsed // timedelta(microseconds=1)).scaleb(-6)
            cap = timedelta(microseconds=int(interval * MAX_GAP_INTERVALS * 1_000_000))
            if burst and elapsed > cap:
                capped_from = sample.elapsed_seconds
                logger.warning(
                    "GPU %s (%s): %s s since its previous sample is more than %d sampling intervals (%s s); "
                    "billing %s s, not the whole gap",
                    reading.uuid,
                    reading.name,
                    _plain(sample.elapsed_seconds),
                    MAX_GAP_INTERVALS,
                    _plain(interval),
                    _plain(interval * MAX_GAP_INTERVALS),
                )
                elapsed = cap
            if burst:
                busy, idle = gpu_hours_split(elapsed=elapsed, utilisation_percent=reading.utilisation_percent)
                _bill(sample, reading=reading, busy=busy, idle=idle)
            else:
                not_billed = "burst mode off"
        sample.save(force_insert=True)
        GpuDevice.objects.filter(pk=device.pk, last_seen__lt=sampled_at).update(
            last_seen=sampled_at, name=reading.name, memory_total=reading.memory_total
        )
    return GpuSampleResult(sample, created=True, capped_from=capped_from, not_billed=not_billed)


def _bill(sample: GpuSample, *, reading: GpuReading, busy: Decimal, idle: Decimal) -> None:
    events = _gpu_events(reading=reading, sampled_at=sample.sampled_at, busy=busy, idle=idle)
    results = cost_entry_record_many(events)
    refused = [r for r in results if r.status == "rejected"]
    if refused:
        errors = "; ".join(f"{name}: {' '.join(texts)}" for name, texts in (refused[0].errors or {}).items())
        hint = ""
        if "provider" in (refused[0].errors or {}):
            hint = (
                " (run `manage.py bootstrap`, whose default catalog prices gpu/default, add a GPU-hour price for "
                "provider gpu, or set COSTCONTROL_EXTRA_PROVIDERS=gpu)"
            )
        raise GpuBillingError(f"GPU time not recorded: {errors}{hint}")
    entries = [r.entry for r in results if r.entry is not None]
    currencies = {e.currency for e in entries}
    if len(currencies) > 1:
        raise GpuBillingError(
            f"gpu_busy and gpu_idle of {reading.name} are priced in different currencies ({', '.join(sorted(currencies))}); "
            "price both in one currency"
        )
    sample.billed = True
    sample.busy_gpu_hours, sample.idle_gpu_hours = busy, idle
    sample.amount = sum((e.amount for e in entries), Decimal(0))
    sample.currency = entries[0].currency if entries else "USD"
    sample.entry_keys = [e.idempotency_key for e in entries]


@dataclass
class GpuSampleRun:
    """What one sampler run did: for the task's log and the command's summary."""

    sampled_at: datetime
    burst: bool = False
    unavailable: str | None = None
    results: list[GpuSampleResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def gpu_hours(self) -> Decimal:
        return sum((r.sample.busy_gpu_hours + r.sample.idle_gpu_hours for r in self.results if r.created), Decimal(0))

    def costs(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        for r in self.results:
            if r.created and r.sample.billed:
                totals[r.sample.currency] = totals.get(r.sample.currency, Decimal(0)) + r.sample.amount
        return totals

    def summary_lines(self) -> list[str]:
        when = f"{timezone.localtime(self.sampled_at):%Y-%m-%d %H:%M:%S %Z}"
        if self.unavailable:
            return [f"{when}: {self.unavailable}"]
        costs = self.costs() or {"USD": Decimal(0)}
        cost = ", ".join(format_money(amount, currency) for currency, amount in sorted(costs.items()))
        lines = [
            f"{when}: {len(self.results)} GPU(s) sampled, burst mode {'on' if self.burst else 'off'}; "
            f"billed {self.gpu_hours.normalize():f} GPU-hours, {cost}"
        ]
        for r in self.results:
            s = r.sample
            line = (
                f"  {s.device.name} ({s.device.uuid}): {s.utilisation_percent}% busy, "
                f"memory {_gib(s.memory_used)}/{_gib(s.memory_total)} GiB"
            )
            if s.power_watts is not None:
                line += f", {s.power_watts.normalize():f} W"
            line += f", {len(s.processes)} process(es)"
            if r.not_billed:
                line += f"; {r.not_billed}, nothing billed"
            elif s.billed:
                line += (
                    f"; billed {s.busy_gpu_hours.normalize():f} busy + {s.idle_gpu_hours.normalize():f} idle "
                    f"GPU-hours = {format_money(s.amount, s.currency)}"
                )
                if r.capped_from is not None:
                    line += f" (gap of {r.capped_from.normalize():f} s capped)"
            lines.append(line)
        lines.extend(f"  {line}" for line in self.skipped)
        return lines


def _gib(value: int) -> str:
    return f"{Decimal(value) / Decimal(2**30):.1f}"


def gpu_usage_sample(
    *,
    now: datetime | None = None,
    interval_seconds: Decimal | int | None = None,
    nvml: ModuleType | None = None,
) -> GpuSampleRun:
    """Sample every GPU once (see the module docstring). Returns normally without NVML or a GPU."""
    sampled_at = now or timezone.now()
    run = GpuSampleRun(sampled_at=sampled_at)
    read = gpu_devices_read(nvml=nvml)
    run.skipped = list(read.skipped)
    if read.unavailable:
        run.unavailable = read.unavailable
        return run
    interval = Decimal(interval_seconds) if interval_seconds is not None else gpu_sample_interval_seconds()
    run.burst = gpu_burst_enabled()
    for reading in read.readings:
        try:
            run.results.append(
                gpu_sample_record(reading=reading, sampled_at=sampled_at, interval_seconds=interval, burst=run.burst)
            )
        except GpuBillingError as exc:
            line = f"GPU {reading.uuid} ({reading.name}) skipped: {exc}"
            logger.error(line)
            run.skipped.append(line)
    return run
