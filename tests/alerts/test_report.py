"""The daily cost report: every figure of `cost_report --json` audited against the ledger itself.

The report reads only the hourly rollups; these tests sum the ledger (CostEntry) directly, so a
report that mis-buckets a day, drops a currency or mis-groups a scope disagrees with them.
The day is Sunday 25 October 2026 in Europe/Berlin: the end of summer time makes it 25 hours
long, and its local midnights are 22:00 and 23:00 UTC, so a UTC-day report would differ.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from io import StringIO
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db.models import Count, Q, QuerySet, Sum

from alerts.models import Alert, Channel, ChannelKind, Notification, NotificationKind
from alerts.report_email import daily_report_send, daily_report_subject
from alerts.reports import daily_report_build, day_window
from budgets.models import Budget
from core.money import format_money
from tests.factories import AlertFactory, BudgetFactory, ChannelFactory, PriceFactory
from tracking.batches import batch_cost_compute, batch_finish, batch_start
from tracking.models import TOKEN_FIELDS, CostEntry, GpuDevice, GpuSample, Unit
from tracking.services import cost_entry_correct, cost_entry_record

pytestmark = pytest.mark.django_db

BERLIN = ZoneInfo("Europe/Berlin")
DAY = date(2026, 10, 25)  # a Sunday; summer time ends at 03:00 local
NOW = datetime(2026, 10, 26, 7, 0, tzinfo=BERLIN)  # the beat's 07:00 the morning after
# The windows, written out by hand (not computed by the code under test).
START, END = datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC)
PREVIOUS = (datetime(2026, 10, 23, 22, tzinfo=UTC), START)
LAST_WEEK = (datetime(2026, 10, 17, 22, tzinfo=UTC), datetime(2026, 10, 18, 22, tzinfo=UTC))
MONTH_START = datetime(2026, 9, 30, 22, tzinfo=UTC)
CENT = Decimal("0.01")

_keys = itertools.count()


def local(day: int, hour: int, minute: int = 0, *, second: int = 0, microsecond: int = 0, fold: int = 0) -> datetime:
    return datetime(2026, 10, day, hour, minute, second, microsecond, tzinfo=BERLIN, fold=fold)


@pytest.fixture
def berlin(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    settings.EMAIL_ALERT_RECIPIENTS = []


@pytest.fixture
def frozen(berlin) -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def prices(gpt4o_prices):
    PriceFactory(provider="anthropic", model="claude-sonnet-4", unit=Unit.INPUT_TOKEN, unit_price="0.000003")
    PriceFactory(provider="anthropic", model="claude-sonnet-4", unit=Unit.OUTPUT_TOKEN, unit_price="0.000015")
    PriceFactory(provider="gpu", model="a100", operation="", unit=Unit.GPU_HOUR, unit_price="2.00")


def record(at: datetime, *, provider: str = "openai", model: str = "gpt-4o", **fields: Any) -> CostEntry:
    return cost_entry_record(
        provider=provider, model=model, occurred_at=at, idempotency_key=f"report-{next(_keys)}", **fields
    ).entry


@pytest.fixture
def ledger_day(frozen, prices) -> None:
    """A realistic day, its neighbours, and entries just outside its local boundaries."""
    # The day: its very first microsecond, both 02:30s of the DST change, and its very last microsecond.
    record(local(25, 0), service="chatbot", subject="u-alice", input_tokens=10_000, output_tokens=2_000)
    bob = record(local(25, 0, 30), service="chatbot", subject="u-bob", input_tokens=200_000, output_tokens=50_000)
    record(
        local(25, 2, 30),
        provider="anthropic",
        model="claude-sonnet-4",
        service="summariser",
        subject="u-alice",
        input_tokens=40_000,
        output_tokens=8_000,
        tags={"env": "prod"},
    )
    record(
        local(25, 2, 30, fold=1),
        provider="anthropic",
        model="claude-sonnet-4",
        service="summariser",
        subject="u-carol",
        amount="0.01",
        outcome="error",
    )
    record(local(25, 9, 15), service="chatbot", subject="u-dave", amount="0", outcome="rate_limited")
    record(local(25, 14), provider="gpu", model="a100", service="training", job="ft-1", gpu_hours="3.5")
    record(local(25, 14, 20), amount="2.50", tags={"env": "prod"})  # no service, no subject
    record(local(25, 15), model="gpt-9-preview", service="chatbot", subject="u-alice", input_tokens=1_000)  # unpriced
    record(local(25, 18, 45), service="chatbot", subject="u-eve", amount="4.20", currency="EUR")
    record(local(25, 19), subject="<b>mallory</b>", amount="1.50")
    for i in range(1, 13):  # more subjects than the top 10
        record(local(25, 11, i), service="batch", subject=f"s{i:02}", amount=str(Decimal("0.10") * i))
    record(
        local(25, 23, 59, second=59, microsecond=999_999),
        provider="anthropic",
        model="claude-sonnet-4",
        service="summariser",
        subject="u-bob",
        amount="0.75",
    )
    cost_entry_correct(entry=bob, amount="0.80", note="invoice")  # lands in bob's hour, is not an event

    # Just outside: the day before's last second, the next day's first instant and half hour.
    record(local(24, 23, 59, second=59), service="chatbot", subject="u-alice", amount="3.00")
    record(local(26, 0), service="chatbot", subject="u-alice", amount="5.00")
    record(local(26, 0, 30), provider="anthropic", model="claude-sonnet-4", amount="6.00")
    # The day before, the same weekday a week before, the Saturday before that, earlier this month.
    record(local(24, 12), service="chatbot", subject="u-bob", amount="10.00")
    record(local(24, 13), service="chatbot", amount="2.00", currency="EUR")
    record(local(18, 10), provider="anthropic", model="claude-sonnet-4", service="summariser", amount="8.00")
    record(local(18, 23, 30), service="chatbot", amount="1.00")
    record(local(17, 23, 30), service="chatbot", amount="100.00")
    record(local(2, 10), service="chatbot", amount="50.00")


def run_report(*args: str) -> str:
    out = StringIO()
    call_command("cost_report", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def json_report(day: str = "2026-10-25") -> dict[str, Any]:
    return json.loads(run_report("--date", day, "--json"))


# --- the audit: direct ledger queries -------------------------------------------------------------

COUNTERS = ("amount", "events", "errors", "rate_limited", "unpriced", *TOKEN_FIELDS)


def entries(start: datetime, end: datetime, **filters: Any) -> QuerySet[CostEntry]:
    return CostEntry.objects.filter(occurred_at__gte=start, occurred_at__lt=end, **filters)


def ledger(queryset: QuerySet[CostEntry], *, by: str | None = None) -> dict[Any, dict[str, Any]]:
    """{(group value, currency) or currency: counters} summed from the ledger rows themselves."""
    event = Q(corrects__isnull=True)
    groups = ("currency",) if by is None else (by, "currency")
    rows = (
        queryset.values(*groups)
        .order_by()
        .annotate(
            c_amount=Sum("amount"),
            c_events=Count("pk", filter=event),
            c_errors=Count("pk", filter=event & Q(outcome="error")),
            c_rate_limited=Count("pk", filter=event & Q(outcome="rate_limited")),
            c_unpriced=Count("pk", filter=event & Q(pricing_status="unpriced")),
            **{f"c_{name}": Sum(name) for name in TOKEN_FIELDS},
        )
    )
    result = {}
    for row in rows:
        key = row["currency"] if by is None else (row[by], row["currency"])
        result[key] = {name: row[f"c_{name}"] if name == "amount" else int(row[f"c_{name}"]) for name in COUNTERS}
    return result


def counters_of(row: dict[str, Any]) -> dict[str, Any]:
    return {name: Decimal(row[name]) if name == "amount" else row[name] for name in COUNTERS}


def percent(part: Decimal, whole: Decimal) -> str | None:
    if whole <= 0:
        return None
    return f"{(part * 100 / whole).quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):f}"


def cents(amount: str | Decimal, currency: str = "USD") -> str:
    return format_money(Decimal(amount).quantize(CENT, rounding=ROUND_HALF_EVEN), currency)


# --- the JSON report -------------------------------------------------------------------------------


def test_the_day_is_local_midnight_to_local_midnight_and_25_hours_long_when_summer_time_ends(ledger_day):
    report = json_report()

    assert (report["day"], report["time_zone"]) == ("2026-10-25", "Europe/Berlin")
    assert datetime.fromisoformat(report["start"]) == START
    assert datetime.fromisoformat(report["end"]) == END
    assert report["window"]["hours"] == 25 and report["window"]["exact"] is True
    assert report["complete"] is True


def test_every_total_and_its_change_matches_the_ledger_per_currency(ledger_day):
    report = json_report()

    today, before, week = ledger(entries(START, END)), ledger(entries(*PREVIOUS)), ledger(entries(*LAST_WEEK))
    assert [t["currency"] for t in report["totals"]] == ["USD", "EUR"]
    for total in report["totals"]:
        currency = total["currency"]
        assert counters_of(total) == today[currency]
        amount = today[currency]["amount"]
        for key, base_rows in (("previous_day", before), ("same_weekday_last_week", week)):
            base = base_rows[currency]["amount"] if currency in base_rows else Decimal(0)
            comparison = total[key]
            assert Decimal(comparison["amount"]) == base
            assert Decimal(comparison["change"]) == amount - base
            assert comparison["change_percent"] == percent(amount - base, base)
    usd, eur = report["totals"]
    assert usd["previous_day"]["day"] == "2026-10-24" and usd["same_weekday_last_week"]["day"] == "2026-10-18"
    assert Decimal(eur["amount"]) == Decimal("4.20") and eur["same_weekday_last_week"]["change_percent"] is None
    # The boundaries really were tested: the ledger's UTC day holds a different total.
    utc_day = ledger(entries(datetime(2026, 10, 25, tzinfo=UTC), datetime(2026, 10, 26, tzinfo=UTC)))
    assert utc_day["USD"]["amount"] != Decimal(usd["amount"])


def test_every_hour_of_the_day_matches_the_ledger(ledger_day):
    hourly = json_report()["hourly"]

    assert hourly["currency"] == "USD"
    assert len(hourly["hours"]) == 25
    starts = [h["start"] for h in hourly["hours"]]
    assert starts[0] == "2026-10-25T00:00:00+02:00" and starts[-1] == "2026-10-25T23:00:00+01:00"
    assert "2026-10-25T02:00:00+02:00" in starts and "2026-10-25T02:00:00+01:00" in starts
    for hour in hourly["hours"]:
        start = datetime.fromisoformat(hour["start"])
        expected = ledger(entries(start, start + timedelta(hours=1))).get("USD", {"amount": Decimal(0)})
        assert Decimal(hour["amount"]) == expected["amount"], hour["start"]


@pytest.mark.parametrize("kind", ["provider", "service", "model"])
def test_every_breakdown_row_matches_the_ledger_grouped_the_same_way(ledger_day, kind):
    report = json_report()
    breakdown = report["breakdowns"][kind]

    totals = {t["currency"]: Decimal(t["amount"]) for t in report["totals"]}
    expected = ledger(entries(START, END).exclude(**{kind: ""}), by=kind)
    assert breakdown["available"] is True
    assert {(r["name"], r["currency"]) for r in breakdown["rows"]} == set(expected)
    for row in breakdown["rows"]:
        assert row["scope"] == f"{kind}:{row['name']}"
        assert counters_of(row) == expected[(row["name"], row["currency"])], row["name"]
        assert row["share_percent"] == percent(Decimal(row["amount"]), totals[row["currency"]])
    usd = [Decimal(r["amount"]) for r in breakdown["rows"] if r["currency"] == "USD"]
    assert usd == sorted(usd, reverse=True)
    assert breakdown["rows"][-1]["currency"] == "EUR"  # the main currency first
    without = ledger(entries(START, END, **{kind: ""}))
    assert {r["currency"]: counters_of(r) for r in breakdown["unattributed"]} == without
    for rest in breakdown["unattributed"]:
        assert rest["share_percent"] == percent(Decimal(rest["amount"]), totals[rest["currency"]])


def test_the_operation_breakdown_comes_from_the_operation_rollups(frozen, prices):
    record(local(25, 10), input_tokens=1_000)
    record(local(25, 11), provider="gpu", model="a100", gpu_hours="1")
    record(local(25, 12), amount="1.25")

    operation = json_report()["breakdowns"]["operation"]

    expected = ledger(entries(START, END).exclude(operation=""), by="operation")
    assert operation["available"] is True
    assert {(r["name"], r["currency"]): counters_of(r) for r in operation["rows"]} == expected
    assert {r["currency"]: counters_of(r) for r in operation["unattributed"]} == ledger(
        entries(START, END, operation="")
    )


def test_the_top_10_subjects_are_the_ledgers_10_most_expensive(ledger_day):
    subjects = json_report()["top_subjects"]

    expected = ledger(entries(START, END).exclude(subject=""), by="subject")
    usd = sorted(((k[0], v) for k, v in expected.items() if k[1] == "USD"), key=lambda kv: (-kv[1]["amount"], kv[0]))
    rows = [r for r in subjects["rows"] if r["currency"] == "USD"]
    assert [r["name"] for r in rows] == [name for name, _ in usd[:10]]
    assert [counters_of(r) for r in rows] == [counters for _, counters in usd[:10]]
    assert [r["name"] for r in subjects["rows"] if r["currency"] == "EUR"] == ["u-eve"]
    assert subjects["counts"] == [
        {"currency": "USD", "subjects": len(usd)},
        {"currency": "EUR", "subjects": 1},
    ]
    assert len(usd) > 10
    assert {r["currency"]: counters_of(r) for r in subjects["unattributed"]} == ledger(entries(START, END, subject=""))


def test_every_active_budget_shows_what_the_ledger_says_it_spent_by_the_end_of_the_day(ledger_day):
    monthly = BudgetFactory(name="Organisation", scope="global", period="monthly", amount=Decimal("100"))
    BudgetFactory(name="OpenAI daily", scope="provider:openai", period="daily", amount=Decimal("10"))
    BudgetFactory(name="GPU daily", scope="provider:gpu", period="daily", amount=Decimal("8"))
    BudgetFactory(name="Euro", scope="global", period="monthly", amount=Decimal("5"), currency="EUR")
    BudgetFactory(name="Retired", scope="global", is_active=False)

    budgets = json_report()["budgets"]

    assert datetime.fromisoformat(budgets["at"]) == END - timedelta(microseconds=1)
    rows = {b["name"]: b for b in budgets["rows"]}
    assert sorted(rows) == ["Euro", "GPU daily", "OpenAI daily", "Organisation"]
    starts = {"monthly": MONTH_START, "daily": START}
    filters = {"global": {}, "provider:openai": {"provider": "openai"}, "provider:gpu": {"provider": "gpu"}}
    for row in rows.values():
        spent = ledger(entries(starts[row["period"]], END, **filters[row["scope"]]))[row["currency"]]["amount"]
        limit = Decimal(row["limit"])
        assert limit == Budget.objects.get(pk=row["id"]).amount  # no rollover: the limit is the amount
        assert Decimal(row["spent"]) == spent, row["name"]
        assert Decimal(row["remaining"]) == limit - spent
        assert row["utilisation_percent"] == percent(spent, limit)
        assert datetime.fromisoformat(row["period_start"]) == starts[row["period"]]
    assert Decimal(rows["GPU daily"]["spent"]) == Decimal("7.00")  # 3.5 GPU-hours at 2.00
    assert rows["GPU daily"]["level"] == "warning"  # 87.5 %
    assert rows["Organisation"]["level"] == "exceeded"  # the 50.00 of 2 October and more
    assert rows["Euro"]["level"] == "exceeded"  # 2.00 + 4.20 EUR
    assert rows["Organisation"]["id"] == monthly.pk


def test_gpu_cost_is_the_gpu_providers_spend_and_hours_and_utilisation_say_why_they_are_missing(ledger_day):
    report = json_report()

    gpu = report["gpu"]
    assert gpu["scope"] == "provider:gpu"
    assert [counters_of(c) for c in gpu["cost"]] == [ledger(entries(START, END, provider="gpu"))["USD"]]
    assert Decimal(gpu["cost"][0]["amount"]) == Decimal("7.00")
    assert gpu["hours"] is None and gpu["hours_note"] == "no GPU samples in the day"
    assert gpu["utilisation_percent"] is None and gpu["utilisation_note"]
    assert report["cost_per_lead"]["value"] is None
    assert report["cost_per_lead"]["note"] == "no batch finished this day"


def test_gpu_hours_and_utilisation_come_from_the_days_samples_weighted_by_time(frozen):
    device = GpuDevice.objects.create(
        uuid="GPU-1", name="NVIDIA A100", memory_total=80 * 2**30, first_seen=START, last_seen=END
    )

    def sample(at: datetime, seconds: int, percent: int) -> None:
        hours = Decimal(seconds) / 3600
        GpuSample.objects.create(
            device=device,
            sampled_at=at,
            utilisation_percent=percent,
            memory_used=2**30,
            memory_total=80 * 2**30,
            elapsed_seconds=Decimal(seconds),
            billed=True,
            busy_gpu_hours=hours * percent / 100,
            idle_gpu_hours=hours * (100 - percent) / 100,
        )

    sample(local(24, 23, 59), 3600, 100)  # the day before: not counted
    sample(START, 3600, 90)  # local midnight: the day's first
    sample(local(25, 12), 7200, 30)
    sample(END - timedelta(microseconds=1), 0, 0)  # covers no time: not in the average
    gpu = json_report()["gpu"]
    assert gpu["samples"] == 3
    assert Decimal(gpu["hours"]) == Decimal(3) and Decimal(gpu["idle_hours"]) == Decimal("1.5")
    assert Decimal(gpu["utilisation_percent"]) == Decimal("50.0")  # (90*1 + 30*2) / 3 hours


def test_cost_per_lead_is_the_days_finished_batches_and_the_month_to_date(frozen, prices):
    def batch(name: str, start: datetime, cost: str, leads: int) -> None:
        with time_machine.travel(start, tick=False):
            run = batch_start(name=name)
        record(start + timedelta(minutes=1), amount=cost, job=run.job)
        with time_machine.travel(start + timedelta(minutes=30), tick=False):
            batch_cost_compute(batch=batch_finish(batch=run, leads=leads))

    batch("a", local(24, 12), "9.00", 3)  # the day before
    batch("b", local(25, 1), "4.00", 8)
    batch("c", local(25, 20), "2.00", 0)
    batch("d", local(25, 23, 45), "1.00", 2)  # finishes 26 Oct 00:15: the next day
    cpl = json_report()["cost_per_lead"]
    assert (cpl["batches"], Decimal(cpl["cost"]), cpl["leads"]) == (2, Decimal("6"), 8)
    assert Decimal(cpl["value"]) == Decimal("0.75") and cpl["note"] == ""
    # Month to date at the day's end: all October spend so far over b's and a's leads.
    assert cpl["month_to_date"]["leads"] == 11
    assert Decimal(cpl["month_to_date"]["cost"]) == Decimal("16")  # 9 + 4 + 2 + the first minute of d (23:46)
    text = StringIO()
    call_command("cost_report", "--date", "2026-10-25", stdout=text)
    # To 4 places where needed, as the rules show it (16 / 11 was "1.454545454 USD").
    assert "0.75 USD per lead (6.00 USD for 8 leads in 2 batches); month to date 1.4545 USD per lead" in text.getvalue()


def fire(title: str, first: datetime, last: datetime | None = None, **fields: Any) -> Alert:
    return AlertFactory(
        key=f"test:{title}",
        source="rule",
        scope="global",
        level=fields.pop("level", "warning"),
        title=title,
        message=title,
        first_fired_at=first,
        last_fired_at=last or first,
        **fields,
    )


def test_alerts_fired_in_the_day_are_listed_in_the_order_they_fired(frozen):
    fire("again today", local(20, 9), local(25, 16), level="critical")
    fire("this morning", local(25, 0))
    fire("first today, resolved later", local(25, 23, 30), state="resolved")
    fire("the evening before", local(24, 23, 59))
    fire("the next day", local(26, 0))

    alerts = json_report()["alerts"]

    assert alerts["count"] == 3
    assert [(a["title"], a["level"], a["state"]) for a in alerts["rows"]] == [
        ("this morning", "warning", "firing"),
        ("again today", "critical", "firing"),
        ("first today, resolved later", "warning", "resolved"),
    ]


def test_amounts_are_decimal_strings_never_floats(ledger_day):
    def walk(value: Any) -> Iterator[Any]:
        if isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)
        else:
            yield value

    report = json_report()

    assert not [v for v in walk(report) if isinstance(v, float)]
    assert report["totals"][0]["amount"] == f"{ledger(entries(START, END))['USD']['amount']:f}"


def test_a_day_without_spend_reports_zero_and_no_change_percent(frozen):
    report = json_report()

    [usd] = report["totals"]
    assert (usd["currency"], Decimal(usd["amount"]), usd["events"]) == ("USD", Decimal(0), 0)
    assert usd["previous_day"]["change_percent"] is None
    assert all(not report["breakdowns"][k]["rows"] for k in ("provider", "service", "model"))
    assert report["budgets"]["rows"] == [] and report["alerts"] == {"count": 0, "rows": []}


def test_a_spring_day_is_23_hours_long(berlin):
    window = day_window(date(2026, 3, 29))

    assert (window.start, window.end) == (
        datetime(2026, 3, 28, 23, tzinfo=UTC),
        datetime(2026, 3, 29, 22, tzinfo=UTC),
    )


def test_a_zone_whose_midnight_is_not_on_a_utc_hour_is_read_by_whole_hours_and_says_so(frozen, settings):
    settings.TIME_ZONE = "Asia/Kolkata"  # UTC+05:30

    report = json_report("2026-10-25")

    assert report["start"] == "2026-10-24T18:30:00+00:00"
    assert report["window"]["bucket_start"] == "2026-10-24T18:00:00+00:00"
    assert report["window"]["exact"] is False
    assert "Rollups are hourly" in run_report("--date", "2026-10-25")


# --- text, HTML and the command ------------------------------------------------------------------


def test_the_text_report_shows_the_figures_of_the_json_one(ledger_day):
    BudgetFactory(name="GPU daily", scope="provider:gpu", period="daily", amount=Decimal("8"))
    fire("Spend of global today > 10", local(25, 9))
    report = json_report()

    text = run_report("--date", "2026-10-25")

    assert text.startswith("costcontrol daily report: Sun 25 Oct 2026 (Europe/Berlin, 25 hours)")
    for total in report["totals"]:
        assert cents(total["amount"], total["currency"]) in text
        assert cents(total["previous_day"]["amount"], total["currency"]) in text
    for kind in ("provider", "service", "model"):
        for row in report["breakdowns"][kind]["rows"]:
            assert row["name"] in text
            assert cents(row["amount"], row["currency"]) in text
    assert "s12" in text and "s02" not in text  # the top 10 only
    assert "<b>mallory</b>" in text  # plain text is not escaped
    assert "GPU daily" in text and "87.50 %" in text and "warning" in text
    assert "Spend of global today > 10" in text
    assert "no batch finished this day" in text


def test_the_html_report_has_the_figures_bars_and_escaped_names_and_no_images_or_scripts(ledger_day, tmp_path):
    fire("<script>alert(1)</script>", local(25, 9))
    report = json_report()
    target = tmp_path / "report.html"

    printed = run_report("--date", "2026-10-25", "--html", str(target))

    html = target.read_text(encoding="utf-8")
    assert str(target) in printed
    for total in report["totals"]:
        assert cents(total["amount"], total["currency"]) in html
    for row in report["breakdowns"]["provider"]["rows"]:
        assert cents(row["amount"], row["currency"]) in html
    assert "&lt;b&gt;mallory&lt;/b&gt;" in html and "<b>mallory</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
    assert "<img" not in html
    assert "width:100%;" in html  # the biggest row's bar


def test_a_bad_date_is_refused_naming_the_option(frozen):
    for value in ("2026-13-01", "yesterday", "25.10.2026"):
        with pytest.raises(CommandError, match="--date"):
            run_report("--date", value)
    with pytest.raises(CommandError, match="--date: 2026-10-27 is in the future"):
        run_report("--date", "2026-10-27")


def test_the_default_day_is_yesterday_in_the_time_zone(frozen):
    text = run_report()

    assert text.startswith("costcontrol daily report: Sun 25 Oct 2026")


def test_the_subject_names_the_day_the_total_and_the_change(frozen, prices):
    record(datetime(2026, 10, 24, 12, tzinfo=BERLIN), amount="1000.00")
    record(datetime(2026, 10, 25, 12, tzinfo=BERLIN), amount="1120.00")

    assert daily_report_subject(daily_report_build(day=DAY)) == (
        "costcontrol daily report for Sun 25 Oct 2026: 1,120.00 USD (+12.0 % vs the day before)"
    )
    assert daily_report_subject(daily_report_build(day=date(2026, 10, 24))) == (
        "costcontrol daily report for Sat 24 Oct 2026: 1,000.00 USD (nothing spent the day before)"
    )


def test_the_subject_and_the_body_show_the_same_change(frozen, prices):
    record(datetime(2026, 10, 24, 12, tzinfo=BERLIN), amount="1000.00")
    record(datetime(2026, 10, 25, 12, tzinfo=BERLIN), amount="995.00")
    report = daily_report_build(day=DAY)

    assert daily_report_subject(report).endswith("(-0.5 % vs the day before)")  # was "(+-0 % ...)"
    assert "-0.5 %" in run_report("--date", "2026-10-25")

    record(datetime(2026, 10, 25, 13, tzinfo=BERLIN), amount="4.99")  # +0.0 % would say "grew"
    assert daily_report_subject(daily_report_build(day=DAY)).endswith("(0.0 % vs the day before)")


# --- sending ---------------------------------------------------------------------------------------


def channel(name: str, **fields: Any) -> Channel:
    return ChannelFactory(
        name=name, kind=ChannelKind.EMAIL, target=f"{name}@example.com", **{"receives_reports": True, **fields}
    )


def test_the_report_is_queued_once_per_report_channel_however_often_beat_ticks(ledger_day, settings):
    settings.EMAIL_ALERT_RECIPIENTS = ["ops@example.com"]
    finance = channel("finance")
    channel("alerts-only", receives_reports=False)
    channel("switched-off", is_enabled=False)

    assert daily_report_send() == 2
    assert daily_report_send() == 0

    notifications = Notification.objects.order_by("channel__name")
    default = Channel.objects.get(name="Default email")
    assert [(n.channel, n.kind, n.dedup_key) for n in notifications] == [
        (default, NotificationKind.REPORT, f"report:2026-10-25:{default.pk}"),
        (finance, NotificationKind.REPORT, f"report:2026-10-25:{finance.pk}"),
    ]
    report = notifications[0].payload["report"]
    assert report["day"] == "2026-10-25"
    usd = cents(report["totals"][0]["amount"])
    assert notifications[0].subject.startswith(f"costcontrol daily report for Sun 25 Oct 2026: {usd} (")
    assert usd in notifications[0].text and usd in notifications[0].html


def test_a_channel_added_after_the_report_went_out_gets_it_on_the_next_tick(frozen):
    channel("finance")
    assert daily_report_send() == 1

    late = channel("late")

    assert daily_report_send() == 1
    assert Notification.objects.filter(channel=late, dedup_key=f"report:2026-10-25:{late.pk}").exists()
    assert daily_report_send(day=date(2026, 10, 24)) == 2  # another day is another report
