"""GPU cost: NVML samples per device; in burst mode busy and idle GPU-hours in the ledger.

NVML is the fake module in fake_nvml.py (the real one needs a driver and a GPU); everything of
ours runs for real against the database.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from costcontrol.services import periodic_tasks_install
from tests.factories import PriceFactory
from tests.tracking.fake_nvml import (
    GIB,
    FakeGpu,
    FakeNvml,
    NVMLError_DriverNotLoaded,
    NVMLError_GpuIsLost,
    NVMLError_LibraryNotFound,
    NVMLError_LibRmVersionMismatch,
    NVMLError_NoPermission,
    NVMLError_NotSupported,
    NVMLError_OperatingSystem,
    NVMLError_Unknown,
)
from tracking.gpu import gpu_burst_enabled, gpu_settings_update, gpu_usage_sample
from tracking.models import CostEntry, GpuDevice, GpuSample, GpuSettings, Price, PricingStatus, Unit
from tracking.selectors import ledger_differences, spend_total
from tracking.tasks import gpu_sample

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"


@pytest.fixture(autouse=True)
def gpu_provider(db):
    """The default catalog's gpu/default price: it makes provider gpu known (bootstrap loads it)."""
    return PriceFactory(provider="gpu", model="default", operation="gpu", unit=Unit.GPU_HOUR, unit_price="0.50")


@pytest.fixture
def burst(settings):
    settings.GPU_BURST = True
    settings.GPU_BURST_COST_DOLLARS = Decimal("0.50")


def sample(at: datetime, nvml: FakeNvml, *, interval: int = 3600):
    with time_machine.travel(at, tick=False):
        return gpu_usage_sample(now=at, nvml=nvml, interval_seconds=interval)


def entries(**filters) -> dict[tuple[str, str], CostEntry]:
    return {(e.tags["gpu"], e.operation): e for e in CostEntry.objects.filter(provider="gpu", **filters)}


def gpu_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("tracking")]


def run_command(*args: str, at: datetime | None = None) -> str:
    out = StringIO()
    if at is None:
        call_command("track_gpu_usage", *args, stdout=out, stderr=StringIO())
    else:
        with time_machine.travel(at, tick=False):
            call_command("track_gpu_usage", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- reading NVML -------------------------------------------------------------------------------


def test_it_stores_what_nvml_reports_for_every_gpu_and_shuts_nvml_down():
    nvml = FakeNvml(
        [
            FakeGpu(
                uuid="GPU-0",
                name=H100,
                utilisation=75,
                memory_used=10 * GIB,
                memory_total=80 * GIB,
                power_mw=312_456,
                processes=[(4242, 9 * GIB), (4243, None)],
            ),
            FakeGpu(uuid="GPU-1", name=A100, utilisation=0, power_mw=None, processes=None),
        ]
    )

    run = sample(NOW, nvml)

    assert (nvml.inits, nvml.shutdowns) == (1, 1)
    assert run.unavailable is None and len(run.results) == 2
    samples = {s.device.uuid: s for s in GpuSample.objects.select_related("device")}
    h100 = samples["GPU-0"]
    assert (h100.device.name, h100.sampled_at, h100.utilisation_percent) == (H100, NOW, 75)
    assert (h100.memory_used, h100.memory_total, h100.power_watts) == (10 * GIB, 80 * GIB, Decimal("312.456"))
    assert h100.processes == [{"pid": 4242, "used_memory": 9 * GIB}, {"pid": 4243, "used_memory": None}]
    # What this device's NVML cannot say is left empty; it is not an error.
    assert (samples["GPU-1"].power_watts, samples["GPU-1"].processes) == (None, [])
    assert {(d.uuid, d.name, d.first_seen, d.last_seen) for d in GpuDevice.objects.all()} == {
        ("GPU-0", H100, NOW, NOW),
        ("GPU-1", A100, NOW, NOW),
    }


def test_the_first_sample_of_a_device_bills_nothing(burst):
    run = sample(NOW, FakeNvml([FakeGpu(uuid="GPU-0", utilisation=100)]))

    only = run.results[0].sample
    assert (only.billed, only.elapsed_seconds, only.amount) == (False, None, Decimal(0))
    assert not CostEntry.objects.exists()
    assert "first sample of this device, nothing billed" in run.summary_lines()[1]


# --- billing ------------------------------------------------------------------------------------


def test_burst_time_is_billed_as_busy_and_idle_gpu_hours_weighted_by_utilisation(burst):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", name=H100, utilisation=75), FakeGpu(uuid="GPU-1", name=A100)])
    sample(NOW, nvml)
    nvml.gpus[1].utilisation = 30

    sample(NOW + 90 * timedelta(minutes=1), nvml)

    got = entries()
    assert {key: (e.gpu_hours, e.amount) for key, e in got.items()} == {
        ("GPU-0", "gpu_busy"): (Decimal("1.125"), Decimal("0.5625")),
        ("GPU-0", "gpu_idle"): (Decimal("0.375"), Decimal("0.1875")),
        ("GPU-1", "gpu_busy"): (Decimal("0.45"), Decimal("0.225")),
        ("GPU-1", "gpu_idle"): (Decimal("1.05"), Decimal("0.525")),
    }
    busy = got[("GPU-0", "gpu_busy")]
    assert (busy.provider, busy.model, busy.service, busy.job, busy.tags) == ("gpu", H100, "gpu", "", {"gpu": "GPU-0"})
    assert (busy.occurred_at, busy.currency, busy.pricing_status, busy.is_estimate) == (
        NOW + 90 * timedelta(minutes=1),
        "USD",
        PricingStatus.EXPLICIT,
        True,  # computed from a rate, not invoiced
    )
    assert busy.idempotency_key == "gpu:GPU-0:2026-11-20T10:30:00+00:00:busy"
    h100 = GpuSample.objects.get(device__uuid="GPU-0", sampled_at=NOW + 90 * timedelta(minutes=1))
    assert (h100.billed, h100.elapsed_seconds, h100.busy_gpu_hours, h100.idle_gpu_hours, h100.amount) == (
        True,
        Decimal("5400"),
        Decimal("1.125"),
        Decimal("0.375"),
        Decimal("0.75"),
    )
    assert sorted(h100.entry_keys) == sorted(e.idempotency_key for (uuid, _), e in got.items() if uuid == "GPU-0")


def test_busy_and_idle_hours_add_up_exactly_when_the_split_does_not_terminate(burst):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", utilisation=33)])
    sample(NOW, nvml)

    sample(NOW + timedelta(seconds=1000), nvml)

    got = entries()
    busy, idle = got[("GPU-0", "gpu_busy")], got[("GPU-0", "gpu_idle")]
    # 1000 s = 0.277777778 h (9 places, half-even); 33 % of it, the rest idle; each cost rounded once.
    assert (busy.gpu_hours, idle.gpu_hours) == (Decimal("0.091666667"), Decimal("0.186111111"))
    assert busy.gpu_hours + idle.gpu_hours == Decimal("0.277777778")
    assert (busy.amount, idle.amount) == (Decimal("0.045833334"), Decimal("0.093055556"))


def test_GPU_BURST_COST_DOLLARS_is_the_price_of_a_device_without_a_catalog_price(burst, settings):
    settings.GPU_BURST_COST_DOLLARS = Decimal("1.20")
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", utilisation=100)])
    sample(NOW, nvml)

    sample(NOW + HOUR, nvml)

    got = entries()
    assert (got[("GPU-0", "gpu_busy")].amount, got[("GPU-0", "gpu_idle")].amount) == (Decimal("1.2"), Decimal(0))


def test_a_catalog_price_for_the_device_model_wins_over_GPU_BURST_COST_DOLLARS(burst):
    price = PriceFactory(provider="gpu", model=H100, operation="", unit=Unit.GPU_HOUR, unit_price="2.00")
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", name=H100, utilisation=50), FakeGpu(uuid="GPU-1", name=A100)])
    sample(NOW, nvml)

    sample(NOW + HOUR, nvml)

    got = entries()
    h100_busy = got[("GPU-0", "gpu_busy")]
    assert (h100_busy.amount, got[("GPU-0", "gpu_idle")].amount) == (Decimal("1"), Decimal("1"))
    assert h100_busy.pricing_status == PricingStatus.PRICED
    assert h100_busy.prices_used["gpu_hour"]["price_id"] == price.pk
    # The A100 has no price of its own: the burst rate, 1 idle hour x 0.50.
    assert got[("GPU-1", "gpu_idle")].amount == Decimal("0.5")
    assert got[("GPU-1", "gpu_idle")].pricing_status == PricingStatus.EXPLICIT


def test_the_catalog_can_price_busy_and_idle_time_of_a_device_model_differently(burst):
    for operation, unit_price in (("gpu_busy", "2.00"), ("gpu_idle", "0.40")):
        PriceFactory(provider="gpu", model=H100, operation=operation, unit=Unit.GPU_HOUR, unit_price=unit_price)
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", name=H100, utilisation=25)])
    sample(NOW, nvml)

    sample(NOW + 2 * HOUR, nvml)

    got = entries()
    assert (got[("GPU-0", "gpu_busy")].amount, got[("GPU-0", "gpu_idle")].amount) == (Decimal("1"), Decimal("0.6"))


# --- burst mode -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "admin", "billed"),
    [
        (False, None, False),  # follow GPU_BURST=0
        (True, None, True),  # follow GPU_BURST=1
        (False, True, True),  # the admin turned it on
        (True, False, False),  # the admin turned it off
    ],
)
def test_burst_mode_follows_GPU_BURST_unless_the_admin_sets_it(settings, environment, admin, billed):
    settings.GPU_BURST = environment
    gpu_settings_update(burst=admin)
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", utilisation=60)])
    sample(NOW, nvml)

    run = sample(NOW + HOUR, nvml)

    assert gpu_burst_enabled() is billed
    assert run.burst is billed
    assert run.results[0].sample.billed is billed
    assert CostEntry.objects.filter(provider="gpu").count() == (2 if billed else 0)
    assert GpuSample.objects.count() == 2  # samples are stored either way


def test_switching_burst_off_stops_accrual_from_the_next_sample_on(settings):
    settings.GPU_BURST = False
    gpu_settings_update(burst=True)
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", utilisation=100)])
    sample(NOW, nvml)
    sample(NOW + HOUR, nvml)  # bills NOW .. +1h

    gpu_settings_update(burst=False)
    off = [sample(NOW + n * HOUR, nvml).results[0].sample for n in (2, 3)]
    gpu_settings_update(burst=None)  # follow GPU_BURST=0: still off
    sample(NOW + 4 * HOUR, nvml)
    gpu_settings_update(burst=True)
    back_on = sample(NOW + 5 * HOUR, nvml).results[0].sample

    assert [s.billed for s in off] == [False, False]
    # Back on, only the time since the previous (unbilled) sample is billed.
    assert (back_on.billed, back_on.busy_gpu_hours) == (True, Decimal("1"))
    assert sum(e.gpu_hours for e in CostEntry.objects.filter(provider="gpu")) == Decimal("2")
    assert GpuSample.objects.filter(billed=False).count() == 4  # first, two off, one following the environment


def test_a_gap_longer_than_two_intervals_is_billed_as_two_intervals_and_logged(burst, caplog):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", name=A100, utilisation=50)])
    sample(NOW, nvml)

    with caplog.at_level(logging.WARNING, logger="tracking"):
        capped = sample(NOW + 5 * HOUR, nvml).results[0]
        on_time = sample(NOW + 7 * HOUR, nvml).results[0]  # exactly two intervals: not capped

    assert capped.sample.elapsed_seconds == Decimal("18000")
    assert (capped.sample.busy_gpu_hours, capped.sample.idle_gpu_hours) == (Decimal("1"), Decimal("1"))
    assert (on_time.sample.busy_gpu_hours, on_time.sample.idle_gpu_hours) == (Decimal("1"), Decimal("1"))
    assert gpu_log(caplog) == [
        f"GPU GPU-0 ({A100}): 18000 s since its previous sample is more than 2 sampling intervals (3600 s); "
        "billing 7200 s, not the whole gap"
    ]


# --- NVML errors --------------------------------------------------------------------------------

INIT_ERRORS = [
    NVMLError_LibraryNotFound,
    NVMLError_DriverNotLoaded,
    NVMLError_NoPermission,
    NVMLError_LibRmVersionMismatch,
    NVMLError_OperatingSystem,
    NVMLError_Unknown,
]


@pytest.mark.parametrize("error", INIT_ERRORS, ids=[e.__name__ for e in INIT_ERRORS])
def test_an_nvml_error_at_start_logs_one_line_records_nothing_and_the_command_exits_0(
    burst, error, monkeypatch, caplog
):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", utilisation=90)], init_error=error())
    monkeypatch.setitem(sys.modules, "pynvml", nvml)

    with caplog.at_level(logging.INFO, logger="tracking"):
        printed = run_command("--once", at=NOW)  # raises on a non-zero exit

    line = f"NVML not available: {error.__name__}: {error()}; no GPU sampled, nothing recorded"
    assert gpu_log(caplog) == [line]
    assert line in printed
    assert nvml.shutdowns == 0  # never initialised, so not shut down
    assert (GpuDevice.objects.count(), GpuSample.objects.count(), CostEntry.objects.count()) == (0, 0, 0)


def test_without_nvidia_ml_py_installed_it_logs_one_line_and_the_command_exits_0(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError

    with caplog.at_level(logging.INFO, logger="tracking"):
        printed = run_command("--once")

    (line,) = gpu_log(caplog)
    assert line.startswith("NVML not available: the nvidia-ml-py package is not installed")
    assert line in printed
    assert not GpuSample.objects.exists()


def test_nvml_is_shut_down_when_it_cannot_count_the_devices(caplog):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0")])
    nvml.count_error = NVMLError_Unknown()

    run = sample(NOW, nvml)

    assert run.unavailable == "NVML not available: cannot count devices: NVMLError_Unknown: Unknown Error; " + (
        "no GPU sampled, nothing recorded"
    )
    assert (nvml.inits, nvml.shutdowns) == (1, 1)
    assert not GpuSample.objects.exists()


@pytest.mark.parametrize(
    "failing",
    [
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetComputeRunningProcesses",  # a lost GPU is not "processes not supported"
    ],
)
def test_a_lost_gpu_is_skipped_with_a_log_line_and_the_others_are_sampled(burst, caplog, failing):
    nvml = FakeNvml(
        [
            FakeGpu(uuid="GPU-0", utilisation=10),
            FakeGpu(uuid="GPU-1", utilisation=20, fail={failing: NVMLError_GpuIsLost()}),
            FakeGpu(uuid="GPU-2", utilisation=30),
        ]
    )
    sample(NOW, nvml)
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="tracking"):
        run = sample(NOW + HOUR, nvml)

    assert sorted(r.sample.device.uuid for r in run.results) == ["GPU-0", "GPU-2"]
    assert gpu_log(caplog) == ["GPU 1 skipped: NVMLError_GpuIsLost: GPU is lost"]
    assert {uuid for uuid, _ in entries()} == {"GPU-0", "GPU-2"}
    assert (nvml.inits, nvml.shutdowns) == (2, 2)


def test_a_reading_the_device_does_not_support_is_left_empty_not_skipped(burst):
    gpu = FakeGpu(uuid="GPU-0", fail={"nvmlDeviceGetPowerUsage": NVMLError_NotSupported()})

    run = sample(NOW, FakeNvml([gpu]))

    assert run.results[0].sample.power_watts is None


def test_a_device_whose_entries_are_refused_is_skipped_and_the_next_sample_bills_the_time(
    burst, settings, gpu_provider, caplog
):
    Price.objects.filter(pk=gpu_provider.pk).delete()  # no gpu price at all: provider gpu is unknown
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", name=A100, utilisation=100)])
    sample(NOW, nvml)  # a first sample bills nothing, so it is stored

    with caplog.at_level(logging.ERROR, logger="tracking"):
        refused = sample(NOW + HOUR, nvml)
    settings.COSTCONTROL_EXTRA_PROVIDERS = ["gpu"]
    after = sample(NOW + 2 * HOUR, nvml).results[0].sample

    assert refused.results == []
    (line,) = gpu_log(caplog)
    assert line.startswith(f"GPU GPU-0 ({A100}) skipped: GPU time not recorded: provider: unknown provider 'gpu'")
    assert "COSTCONTROL_EXTRA_PROVIDERS=gpu" in line
    assert not GpuSample.objects.filter(sampled_at=NOW + HOUR).exists()
    assert (after.busy_gpu_hours, after.amount) == (Decimal("2"), Decimal("1"))  # since the last stored sample


# --- exactly once, ledger = rollups ---------------------------------------------------------------


def test_the_same_sample_recorded_twice_counts_once(burst):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", utilisation=40)])
    sample(NOW, nvml)
    first = sample(NOW + HOUR, nvml).results[0]

    again = sample(NOW + HOUR, nvml).results[0]

    assert (first.created, again.created, again.sample.pk) == (True, False, first.sample.pk)
    assert CostEntry.objects.filter(provider="gpu").count() == 2
    # Even with its sample row gone, the ledger's idempotency keys keep the time counted once.
    GpuSample.objects.filter(pk=first.sample.pk).delete()
    redone = sample(NOW + HOUR, nvml).results[0].sample
    assert redone.amount == first.sample.amount == Decimal("0.5")
    assert CostEntry.objects.filter(provider="gpu").count() == 2
    assert spend_total(scope="provider:gpu", start=NOW, end=NOW + 2 * HOUR) == Decimal("0.5")


def test_an_older_sample_arriving_after_a_newer_one_bills_nothing(burst):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", utilisation=100)])
    sample(NOW, nvml)
    sample(NOW + 2 * HOUR, nvml)  # one sampler
    late = sample(NOW + HOUR, nvml).results[0].sample  # another sampler, whose clock or commit lagged

    assert late.billed is False
    assert sum(e.gpu_hours for e in CostEntry.objects.filter(provider="gpu")) == Decimal("2")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_samplers_at_once_never_bill_the_same_time_twice(burst):
    """The beat task and track_gpu_usage may run together: the device's row lock orders them."""
    sample(NOW, FakeNvml([FakeGpu(uuid="GPU-0", utilisation=100)]))
    last = NOW
    for round_ in range(1, 11):
        times = [NOW + round_ * HOUR - timedelta(minutes=20), NOW + round_ * HOUR]
        barrier = threading.Barrier(len(times))

        def sampler(at: datetime, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                gpu_usage_sample(now=at, nvml=FakeNvml([FakeGpu(uuid="GPU-0", utilisation=100)]), interval_seconds=3600)
            finally:
                connection.close()

        threads = [threading.Thread(target=sampler, args=(at,)) for at in times]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        last = times[-1]

    billed = sum(e.gpu_hours for e in CostEntry.objects.filter(provider="gpu"))
    assert billed == Decimal((last - NOW) / HOUR)  # every hour once, whichever sampler committed first
    assert ledger_differences()[0] == []


def test_the_rollups_hold_exactly_what_the_ledger_says_after_sampling(burst, settings):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", name=H100), FakeGpu(uuid="GPU-1", name=A100)])
    PriceFactory(provider="gpu", model=H100, operation="", unit=Unit.GPU_HOUR, unit_price="2.10")
    for step, (first, second) in enumerate([(0, 0), (75, 10), (33, 100), (100, 0), (1, 99), (50, 50)]):
        nvml.gpus[0].utilisation, nvml.gpus[1].utilisation = first, second
        settings.GPU_BURST = step != 3
        sample(NOW + step * timedelta(minutes=47), nvml)
    sample(NOW + 5 * timedelta(minutes=47), nvml)  # a repeat

    assert ledger_differences()[0] == []
    window = {"start": NOW - HOUR, "end": NOW + 6 * HOUR}
    ledger_total = sum(e.amount for e in CostEntry.objects.filter(provider="gpu"))
    samples_total = sum(s.amount for s in GpuSample.objects.all())
    assert spend_total(scope="provider:gpu", **window) == ledger_total == samples_total > 0
    h100_total = sum(s.amount for s in GpuSample.objects.filter(device__uuid="GPU-0"))
    assert spend_total(scope="tag:gpu=GPU-0", **window) == h100_total
    idle_total = sum(e.amount for e in CostEntry.objects.filter(operation="gpu_idle"))
    assert spend_total(scope="operation:gpu_idle", **window) == idle_total


# --- the beat task and the command ----------------------------------------------------------------


def test_the_beat_schedule_samples_gpus_every_GPU_USAGE_CHECK_INTERVAL_SECONDS(settings):
    periodic_tasks_install()

    task = PeriodicTask.objects.get(task="tracking.gpu_sample")
    assert gpu_sample.name == "tracking.gpu_sample"
    assert (task.interval.every, task.interval.period, task.enabled) == (
        settings.GPU_USAGE_CHECK_INTERVAL_SECONDS,
        IntervalSchedule.SECONDS,
        True,
    )


def test_the_task_caps_a_gap_at_two_of_the_intervals_set_in_the_admin(burst, monkeypatch, caplog):
    periodic_tasks_install()
    task = PeriodicTask.objects.get(task="tracking.gpu_sample")
    task.interval = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    task.save()
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([FakeGpu(uuid="GPU-0", utilisation=100)]))

    with time_machine.travel(NOW, tick=False):
        assert gpu_sample() == 1
    caplog.clear()
    with time_machine.travel(NOW + HOUR, tick=False), caplog.at_level(logging.WARNING, logger="tracking"):
        assert gpu_sample() == 1

    billed = GpuSample.objects.get(sampled_at=NOW + HOUR)
    assert billed.busy_gpu_hours == Decimal("0.333333333")  # 20 minutes, not the hour
    assert "3600 s since its previous sample is more than 2 sampling intervals (600 s)" in gpu_log(caplog)[0]


def test_the_command_prints_devices_utilisation_gpu_hours_and_cost(burst, monkeypatch):
    monkeypatch.setitem(
        sys.modules,
        "pynvml",
        FakeNvml([FakeGpu(uuid="GPU-0", name=H100, utilisation=75, memory_used=20 * GIB, power_mw=300_000)]),
    )
    run_command("--once", at=NOW)

    printed = run_command("--once", at=NOW + HOUR)

    assert "1 GPU(s) sampled, burst mode on; billed 1 GPU-hours, 0.50 USD" in printed
    assert (
        f"{H100} (GPU-0): 75% busy, memory 20.0/80.0 GiB, 300 W, 0 process(es); "
        "billed 0.75 busy + 0.25 idle GPU-hours = 0.50 USD"
    ) in printed


def test_the_command_loops_and_survives_nvml_errors(burst, monkeypatch):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", utilisation=50)], init_errors=[NVMLError_DriverNotLoaded()])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)

    printed = run_command("--count", "3", "--interval", "0.05")

    assert printed.count("NVML not available: NVMLError_DriverNotLoaded: Driver Not Loaded") == 1
    assert printed.count("1 GPU(s) sampled") == 2
    assert GpuSample.objects.count() == 2
    assert GpuSample.objects.order_by("sampled_at").last().billed


@pytest.mark.parametrize(("args", "message"), [(["--interval", "0"], "--interval"), (["--count", "0"], "--count")])
def test_the_command_refuses_a_bad_interval_or_count(args, message):
    with pytest.raises(CommandError, match=message):
        run_command(*args)


# --- admin ---------------------------------------------------------------------------------------


def test_the_admin_sets_burst_mode_and_shows_which_setting_is_in_effect(admin_client, settings):
    settings.GPU_BURST = False

    opened = admin_client.get(reverse("admin:tracking_gpusettings_changelist"))
    page = admin_client.get(opened.url).content.decode()
    assert "off (follows GPU_BURST=0)" in page

    saved = admin_client.post(opened.url, {"burst": "on"}, follow=True)
    assert GpuSettings.objects.get().burst is True
    assert gpu_burst_enabled() is True
    assert "on (set in the admin; GPU_BURST=0 is ignored)" in saved.content.decode()

    admin_client.post(opened.url, {"burst": ""})
    assert GpuSettings.objects.get().burst is None
    assert gpu_burst_enabled() is False


def test_the_admin_lists_devices_with_their_last_utilisation_and_samples_read_only(admin_client, burst):
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", name=H100, utilisation=10)])
    sample(NOW, nvml)
    nvml.gpus[0].utilisation = 87
    billed = sample(NOW + HOUR, nvml).results[0].sample

    devices = admin_client.get(reverse("admin:tracking_gpudevice_changelist")).content.decode()
    assert H100 in devices and "GPU-0" in devices and "87%" in devices
    samples = admin_client.get(reverse("admin:tracking_gpusample_changelist") + "?billed__exact=1")
    assert samples.status_code == 200 and "0.50 USD" in samples.content.decode()
    detail = admin_client.get(reverse("admin:tracking_gpusample_change", args=[billed.pk])).content.decode()
    assert "2 entries" in detail
    link = re.search(r'href="([^"]*costentry[^"]*)">2 entries', detail).group(1)
    ledger = admin_client.get(link.replace("&amp;", "&"))
    assert {e.operation for e in ledger.context["cl"].result_list} == {"gpu_busy", "gpu_idle"}
    assert admin_client.get(reverse("admin:tracking_gpusample_add")).status_code == 403
    assert admin_client.post(reverse("admin:tracking_gpusample_change", args=[billed.pk]), {}).status_code == 403
