from __future__ import annotations

import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db.models import Sum

from core.progress import progress_bar
from tests.analytics.conftest import T0, seasonal_entries, write
from tests.analytics.test_anomalies import INJECTED
from tracking.models import Batch, CostEntry, GpuSample, SpendRollup
from tracking.selectors import ledger_differences

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_cost_analytics_prints_trends_anomalies_and_recommendations_as_json(catalog):
    write(seasonal_entries(last_hours=24) + INJECTED[2])

    out, err = run(
        "cost_analytics", "--scope", "global", "--scope", "provider:anthropic", "--at", T0.isoformat(), "--json"
    )

    report = json.loads(out)
    assert [t["scope"] for t in report["trends"]] == ["global", "provider:anthropic"]
    assert report["trends"][0]["forecast"]["method"] in ("hour-of-week", "linear")
    scopes = {a["scope"] for a in report["anomalies"]}
    assert {"global", "provider:anthropic", "subject:cust-c"} <= scopes
    assert all(a["root_cause"] for a in report["anomalies"])
    assert "recommendations" in report
    assert err == ""


def test_cost_analytics_prints_text_and_refuses_a_bad_scope(catalog):
    write(seasonal_entries(last_hours=24) + INJECTED[2])

    out, _ = run("cost_analytics", "--at", T0.isoformat())

    assert "Trend of global over 28 days" in out
    assert "root cause subject:cust-c" in out
    with pytest.raises(CommandError, match="unknown scope kind"):
        run("cost_analytics", "--scope", "planet:mars")


def test_seed_demo_data_records_through_the_real_path_and_twice_adds_nothing():
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        first = json.loads(run("seed_demo_data", "--days", "2", "--json")[0])
        entries, samples, batches = CostEntry.objects.count(), GpuSample.objects.count(), Batch.objects.count()
        second = json.loads(run("seed_demo_data", "--days", "2", "--json")[0])

    assert first["accepted"] > 200 and first["rejected"] == 0
    assert samples == 48 and batches == 2
    assert Batch.objects.filter(cost__gt=0, leads__gt=0, cost_per_lead__isnull=False).count() == 2
    assert second["accepted"] == 0 and second["duplicate"] == first["accepted"]
    assert second["gpu_samples"] == 0 and second["batches"] == 0
    assert (CostEntry.objects.count(), GpuSample.objects.count(), Batch.objects.count()) == (entries, samples, batches)
    # Ledger = rollups, to the last nano-dollar.
    assert ledger_differences()[0] == []
    total = SpendRollup.objects.filter(scope="global").aggregate(t=Sum("amount"))["t"]
    assert total == CostEntry.objects.aggregate(t=Sum("amount"))["t"] > Decimal(0)
    # Several providers with catalog prices, and the anomaly rule.
    assert set(CostEntry.objects.values_list("provider", flat=True)) >= {"openai", "anthropic", "gemini", "gpu"}


def test_a_command_stays_quiet_off_a_terminal_or_with_json():
    with time_machine.travel(T0, tick=False):
        _, err = run("seed_demo_data", "--days", "1", "--no-gpu")
        _, err_json = run("seed_demo_data", "--days", "1", "--no-gpu", "--json")

    assert err == "" and err_json == ""


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_on_a_terminal_only():
    terminal, pipe = FakeTerminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = progress_bar(total=4, label="work", stream=stream)
        for _ in range(4):
            bar.advance()
        bar.close()
    silenced = FakeTerminal()
    progress_bar(total=1, label="work", stream=silenced, enabled=False).advance()

    assert "work [" in terminal.getvalue() and "4/4" in terminal.getvalue()
    assert pipe.getvalue() == "" and silenced.getvalue() == ""
