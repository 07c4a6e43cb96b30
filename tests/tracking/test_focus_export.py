"""manage.py export_focus: the ledger as FOCUS 1.2 rows whose BilledCost sums to the ledger per day and provider,
exact decimals, streamed a day at a time; Parquet with the same figures; an empty range a file with its header."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.core.management import CommandError, call_command

from tests.conftest import EPOCH
from tests.factories import PriceFactory, TeamFactory
from tracking.focus import COLUMNS, focus_rows
from tracking.models import CostEntry, SpendRollupDay
from tracking.services import cost_entry_correct, cost_entry_record

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY1, DAY2 = datetime(2026, 11, 18, 9, 30, tzinfo=UTC), datetime(2026, 11, 19, 23, 59, 59, tzinfo=UTC)


@pytest.fixture
def ledger(gpt4o_prices):
    """Every kind of entry: priced parts (one with an uplift-free rounding rest), cached, an explicit amount, an
    unpriced call, a correction, a team's entry, GPU-hours, on two days and two providers."""
    PriceFactory(
        provider="anthropic", model="claude-haiku-4-5", unit="input_token", unit_price="0.000001", valid_from=EPOCH
    )
    PriceFactory(
        provider="anthropic", model="claude-haiku-4-5", unit="output_token", unit_price="0.000005", valid_from=EPOCH
    )
    PriceFactory(provider="gpu", model="NVIDIA L4", unit="gpu_hour", unit_price="0.80", valid_from=EPOCH)
    team = TeamFactory(name="ml")
    with time_machine.travel(NOW, tick=False):
        for at in (DAY1, DAY2):
            cost_entry_record(
                provider="openai",
                model="gpt-4o",
                input_tokens=1234,
                output_tokens=567,
                cached_input_tokens=89,
                service="chat",
                subject="alice",
                occurred_at=at,
            )
            cost_entry_record(
                provider="openai",
                model="gpt-4o",
                input_tokens=1,
                output_tokens=1,
                service="chat",
                subject="bob",
                occurred_at=at,
            )  # 0.0000125: parts below a nano-dollar's rounding
            cost_entry_record(
                provider="anthropic",
                model="claude-haiku-4-5",
                input_tokens=3333,
                output_tokens=777,
                service="support",
                team=team,
                tags={"env": "prod"},
                occurred_at=at,
            )
        cost_entry_record(provider="openai", model="gpt-4o", amount="0.42", service="chat", occurred_at=DAY1)
        cost_entry_record(provider="openai", model="gpt-9", input_tokens=100, service="chat", occurred_at=DAY1)
        cost_entry_record(
            provider="gpu",
            model="NVIDIA L4",
            gpu_hours="0.75",
            service="gpu",
            operation="gpu_busy",
            tags={"gpu": "GPU-1234"},
            occurred_at=DAY2,
        )
        original = CostEntry.objects.filter(provider="anthropic").order_by("id").first()
        cost_entry_correct(entry=original, amount="0.01", note="invoice says so")


def exported(start: date, end: date) -> list[dict[str, str]]:
    out = io.StringIO()
    call_command("export_focus", "--from", start.isoformat(), "--to", end.isoformat(), stdout=out)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


def test_billed_cost_sums_to_the_ledger_per_day_and_provider_exactly(ledger):
    rows = exported(date(2026, 11, 1), date(2026, 12, 1))
    billed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        billed[(row["ChargePeriodStart"][:10], row["x_Provider"])] += Decimal(row["BilledCost"])
    ledger_days: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for rollup in SpendRollupDay.objects.filter(scope__startswith="provider:"):
        ledger_days[(rollup.bucket.date().isoformat(), rollup.scope.removeprefix("provider:"))] += rollup.amount
    assert billed == ledger_days
    assert sum(billed.values()) == sum(CostEntry.objects.values_list("amount", flat=True))


def test_rows_are_per_day_model_and_pricing_unit_with_every_focus_column(ledger):
    rows = exported(date(2026, 11, 18), date(2026, 11, 19))
    assert list(rows[0]) == list(COLUMNS)
    gpt4o = {r["SkuId"]: r for r in rows if r["x_Model"] == "gpt-4o" and r["x_Subject"] == "alice"}
    assert set(gpt4o) == {"openai/gpt-4o/input_token", "openai/gpt-4o/output_token", "openai/gpt-4o/cached_input_token"}
    output = gpt4o["openai/gpt-4o/output_token"]
    assert (output["PricingQuantity"], output["PricingUnit"], output["ListUnitPrice"]) == ("567.0", "Tokens", "0.00001")
    assert output["BilledCost"] == output["ListCost"] == "0.005670000"
    assert output["ChargePeriodStart"] == "2026-11-18T00:00:00Z" and output["ChargePeriodEnd"] == "2026-11-19T00:00:00Z"
    assert (
        output["BillingPeriodStart"] == "2026-11-01T00:00:00Z" and output["BillingPeriodEnd"] == "2026-12-01T00:00:00Z"
    )
    assert (output["ProviderName"], output["ServiceCategory"], output["ChargeCategory"]) == (
        "OpenAI",
        "AI and Machine Learning",
        "Usage",
    )
    assert output["SkuPriceId"] and output["x_Service"] == "chat" and output["x_PricingStatus"] == "priced"
    explicit = next(r for r in rows if r["SkuId"] == "openai/gpt-4o/call")
    assert (explicit["BilledCost"], explicit["PricingQuantity"], explicit["PricingUnit"]) == (
        "0.420000000",
        "1.0",
        "Requests",
    )
    unpriced = next(r for r in rows if r["x_Model"] == "gpt-9")
    assert (unpriced["BilledCost"], unpriced["PricingQuantity"], unpriced["x_PricingStatus"]) == (
        "0.000000000",
        "100.0",
        "unpriced",
    )
    team = next(r for r in rows if r["x_Team"] == "ml" and r["ChargeCategory"] == "Usage")
    assert json.loads(team["Tags"]) == {"env": "prod"}


def test_gpu_hours_are_in_the_same_file_with_the_device_as_resource(ledger):
    [gpu] = [r for r in exported(date(2026, 11, 19), date(2026, 11, 20)) if r["x_Provider"] == "gpu"]
    assert (gpu["ResourceId"], gpu["ResourceName"], gpu["PricingUnit"], gpu["PricingQuantity"]) == (
        "GPU-1234",
        "NVIDIA L4",
        "Hours",
        "0.75",
    )
    assert gpu["BilledCost"] == "0.600000000"


def test_a_correction_is_an_adjustment_in_its_originals_day(ledger):
    [adjustment] = [r for r in exported(date(2026, 11, 18), date(2026, 11, 19)) if r["ChargeCategory"] == "Adjustment"]
    original = CostEntry.objects.filter(provider="anthropic").order_by("id").first()
    assert Decimal(adjustment["BilledCost"]) == Decimal("0.01") - original.amount
    assert adjustment["PricingQuantity"] == "" and adjustment["x_Team"] == "ml"


def test_an_empty_range_is_a_valid_file_with_the_header_and_no_rows(db, tmp_path):
    out = tmp_path / "focus.csv"
    call_command("export_focus", "--from", "2020-01-01", "--to", "2020-02-01", "--out", str(out), stderr=io.StringIO())
    assert out.read_text().splitlines() == [",".join(COLUMNS)]


def test_parquet_holds_the_same_exact_figures(ledger, tmp_path):
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "focus.parquet"
    call_command(
        "export_focus",
        "--from",
        "2026-11-01",
        "--to",
        "2026-12-01",
        "--format",
        "parquet",
        "--out",
        str(out),
        stderr=io.StringIO(),
    )
    table = pyarrow_parquet.read_table(out)
    assert table.column_names == list(COLUMNS)
    assert sum(table.column("BilledCost").to_pylist()) == sum(CostEntry.objects.values_list("amount", flat=True))
    assert len(table) == len(list(focus_rows(date(2026, 11, 1), date(2026, 12, 1))))


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--from", "2026-11-31"], "is not a date"),
        (["--from", "2026-11-20", "--to", "2026-11-20"], "must be after"),
        (["--format", "parquet"], "needs --out"),
    ],
)
def test_bad_arguments_are_refused_naming_them_and_write_nothing(db, tmp_path, arguments, words):
    with pytest.raises(CommandError, match=words):
        call_command("export_focus", *arguments, stdout=io.StringIO())


def test_a_failed_export_leaves_no_partial_file(ledger, tmp_path, monkeypatch):
    import tracking.focus

    def broken(*args, **kwargs):
        yield ["half a row", *[None] * (len(COLUMNS) - 1)]
        raise RuntimeError("the database went away")

    monkeypatch.setattr(tracking.focus, "focus_rows", broken)
    out = tmp_path / "focus.csv"
    with pytest.raises(RuntimeError):
        call_command("export_focus", "--from", "2026-11-01", "--to", "2026-12-01", "--out", str(out))
    assert list(Path(tmp_path).iterdir()) == []


def test_memory_holds_one_day_not_the_ledger(ledger):
    rows = focus_rows(date(2026, 11, 1), date(2026, 12, 1))
    first = next(rows)  # the first day's rows come before the second day is read
    assert first[9] == datetime(2026, 11, 18, tzinfo=UTC)
    assert all(isinstance(value, Decimal) for value in first[:4])
    assert timedelta(days=1) == first[10] - first[9]


def _download(client, **params) -> tuple[int, list[dict[str, str]]]:
    response = client.get("/admin/tracking/costentry/focus/", params)
    if response.status_code != 200 or not response.get("Content-Disposition"):
        return response.status_code, []
    body = b"".join(response.streaming_content).decode()
    return response.status_code, list(csv.DictReader(io.StringIO(body)))


def test_the_admin_download_is_the_same_file_and_a_teams_staff_get_their_teams_rows_only(ledger):
    from tests.admin_clients import staff_client, superuser_client

    root = superuser_client()
    page = root.get("/admin/tracking/costentry/").content.decode()
    assert 'href="/admin/tracking/costentry/focus/"' in page  # "Export as FOCUS" beside the list
    assert root.get("/admin/tracking/costentry/focus/").status_code == 200  # the form
    status, rows = _download(root, start="2026-11-18", end="2026-11-19", format="csv")
    assert status == 200 and rows == exported(date(2026, 11, 18), date(2026, 11, 20))

    ml = CostEntry.objects.filter(team__isnull=False).first().team
    _, staff = staff_client("ml-lead", [ml], perms=["view_costentry", "view_dashboard"])
    assert "Only your teams" in staff.get("/admin/tracking/costentry/focus/").content.decode()
    _, mine = _download(staff, start="2026-11-18", end="2026-11-19", format="csv")
    assert mine and {r["x_Team"] for r in mine} == {"ml"}
    assert sum(Decimal(r["BilledCost"]) for r in mine) == sum(
        CostEntry.objects.filter(team=ml).values_list("amount", flat=True)
    )
    _, no_export = staff_client("viewer", [ml], perms=["view_costentry"])
    assert no_export.get("/admin/tracking/costentry/focus/").status_code == 403


def test_the_admin_form_names_a_bad_field_with_a_400(ledger):
    from tests.admin_clients import superuser_client

    response = superuser_client().get(
        "/admin/tracking/costentry/focus/", {"start": "2026-11-19", "end": "2026-11-18", "format": "xlsx"}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "must be on or after 2026-11-19" in page and "Select a valid choice" in page


def test_the_daily_task_writes_yesterdays_file_when_a_folder_is_set(ledger, tmp_path, settings):
    from tracking.tasks import focus_export_daily_task

    settings.FOCUS_EXPORT_DIR = ""
    assert focus_export_daily_task() == "FOCUS_EXPORT_DIR is not set: nothing written"
    settings.FOCUS_EXPORT_DIR = str(tmp_path / "focus")
    with time_machine.travel(datetime(2026, 11, 20, 2, 20, tzinfo=UTC), tick=False):
        path = Path(focus_export_daily_task())
        assert focus_export_daily_task() == str(path)  # again: the same file, replaced whole
    assert path.name == "focus-2026-11-19.csv"
    rows = list(csv.DictReader(path.open()))
    assert {r["ChargePeriodStart"] for r in rows} == {"2026-11-19T00:00:00Z"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["focus-2026-11-19.csv"]


def test_the_admin_sends_longer_ranges_to_the_command(ledger):
    from tests.admin_clients import superuser_client

    response = superuser_client().get("/admin/tracking/costentry/focus/", {"start": "2026-10-01", "end": "2026-11-19"})
    assert response.status_code == 400 and "manage.py export_focus" in response.content.decode()
